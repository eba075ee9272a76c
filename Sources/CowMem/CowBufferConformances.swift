// Literals and Codable: what makes a CowBuffer usable where a [UInt8] is written or stored.

extension CowBuffer: ExpressibleByArrayLiteral {
    /// A buffer holding the bytes of an array literal: `let header: CowBuffer = [0x7F, 0x45, 0x4C, 0x46]`.
    ///
    /// An empty literal gives the empty buffer, which has no region. A literal cannot throw,
    /// so if the region cannot be created (out of memory, or no file descriptor left) the
    /// program stops, as an array literal does when it cannot allocate; use ``init(_:)`` to
    /// get that failure as a ``CowMemError`` instead.
    ///
    /// - Parameter bytes: the literal's bytes.
    public init(arrayLiteral bytes: UInt8...) {
        do {
            try self.init(bytes)
        } catch {
            fatalError("CowBuffer(arrayLiteral:): \(error)")
        }
    }
}

extension CowBuffer: Encodable {
    /// Encodes the bytes as `[UInt8]` does: an unkeyed container of `count` `UInt8` values.
    ///
    /// A buffer and an array with the same bytes encode alike, so either can decode what the
    /// other encoded. The representation has no count or page layout of its own, and it says
    /// nothing about history: a decoded buffer is a new one, with all its pages written. As
    /// for an array, a text format such as JSON spends a number per byte: keep large buffers
    /// in files with ``save(to:)-(FilePath)`` instead.
    ///
    /// - Parameter encoder: the encoder to write the bytes to.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.unkeyedContainer()
        try withSpan { bytes throws in
            for index in bytes.indices { try container.encode(bytes[index]) }
        }
    }
}

extension CowBuffer: Decodable {
    /// Decodes bytes encoded as `[UInt8]` encodes them (see ``encode(to:)``), into a new
    /// buffer; zero bytes give the empty buffer.
    ///
    /// - Parameter decoder: the decoder to read the bytes from.
    /// - Throws: the decoder's `DecodingError` if the data is not a list of values from 0 to
    ///   255, or ``CowMemError`` if the region cannot be created.
    public init(from decoder: any Decoder) throws {
        try self.init([UInt8](from: decoder))
    }
}
