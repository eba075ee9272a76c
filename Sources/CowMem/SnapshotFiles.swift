#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// Snapshots by path: an atomic save (a temporary file beside the target, `fsync(2)`, then
// `rename(2)` over it) and a load that opens and closes the file itself.

extension Region {
    /// Writes the region's content to the file at `path` as a CowMem snapshot, atomically:
    /// after a crash or a failure, `path` holds either its old content or the whole new
    /// snapshot, never a part of it.
    ///
    /// The snapshot is written to a new temporary file in the same directory as `path`, which
    /// is flushed with `fsync(2)` and then renamed over `path` with `rename(2)`; the directory
    /// is flushed too, so that the rename itself survives a crash. On failure the temporary
    /// file is removed and `path` is left as it was. The new file is created with the mode
    /// `0666` less the process's umask: it does not keep the permissions or owner of the
    /// file it replaces. Nothing may have `path` loaded as a region: replacing it by rename
    /// is what ``init(loading:)-(FilePath)`` asks for, and regions already loaded from the
    /// old file keep reading it.
    ///
    /// ```swift
    /// try world.save(to: "world.cowmem")
    /// let restored = try Region(loading: "world.cowmem")
    /// ```
    ///
    /// - Parameter path: the file to create or replace. Its directory must exist and be
    ///   writable.
    /// - Throws: ``CowMemError`` with code ``CowMemError/Code/systemError`` for the errors
    ///   of `open(2)`, `pwrite(2)`, `fsync(2)` and `rename(2)` (`ENOENT`, `EACCES`,
    ///   `ENOSPC`, `EIO`, ...), with ``CowMemError/underlyingError`` saying which, or
    ///   ``CowMemError/Code/outOfFileDescriptors``.
    ///
    /// The C function is `cowmem_save`, called on the temporary file.
    public func save(to path: FilePath) throws(CowMemError) {
        try save(to: path, for: "Region.save(to:)")
    }

    /// ``save(to:)-(FilePath)``, with the errors that Swift raises itself naming `api`.
    internal func save(to path: FilePath, for api: String) throws(CowMemError) {
        let temporary = try TemporaryFile(replacing: path, for: api)
        do {
            try save(to: temporary.descriptor)
        } catch {
            temporary.discard()
            throw error
        }
        try temporary.commit()
    }

    /// Opens the snapshot at `path`, written by ``save(to:)-(FilePath)`` or
    /// ``save(to:)-(FileDescriptor)``, as a new region with the snapshot's content and size.
    ///
    /// The file is opened for reading and closed again before the call returns; the library
    /// keeps a descriptor of its own, and reads the pages the first time a thread touches
    /// them (see ``init(loading:)-(FileDescriptor)``). The file's content must not change
    /// while the region or a clone of it exists: replace it only by renaming a new file
    /// over it, as ``save(to:)-(FilePath)`` does.
    ///
    /// - Parameter path: the snapshot file.
    /// - Throws: ``CowMemError`` with code ``CowMemError/Code/notASnapshot`` if the file is
    ///   not a CowMem snapshot, ``CowMemError/Code/systemError`` if it cannot be opened
    ///   (`ENOENT`, `EACCES`, ...), and the errors of ``init(loading:)-(FileDescriptor)``.
    ///
    /// The C function is `cowmem_load`.
    public init(loading path: FilePath) throws(CowMemError) {
        let file = try FileOperations.open(path, .readOnly)
        defer { FileOperations.closeQuietly(file) }
        try self.init(loading: file)
    }
}

extension CowBuffer {
    /// Writes the buffer's bytes to `file` as a CowMem snapshot, as ``Region/save(to:)-(FileDescriptor)``
    /// does for its region.
    ///
    /// A snapshot holds whole pages: the buffer's ``count`` is not recorded unless it is a
    /// multiple of ``Region/pageSize``. Pass it to ``init(loading:count:)-(FileDescriptor,_)``
    /// to get the same buffer back. Saving copies nothing and does not change the buffer.
    ///
    /// - Parameter file: a regular file or memfd, open for writing and without `O_APPEND`.
    /// - Throws: ``CowMemError`` with code ``CowMemError/Code/invalidSize`` for an empty
    ///   buffer (it has no region, and a snapshot holds at least one page), and the errors of
    ///   ``Region/save(to:)-(FileDescriptor)``.
    ///
    /// The C function is `cowmem_save`.
    public func save(to file: FileDescriptor) throws(CowMemError) {
        try storageToSave(for: "CowBuffer.save(to:)").save(to: file)
    }

    /// Writes the buffer's bytes to the file at `path` as a CowMem snapshot, atomically, as
    /// ``Region/save(to:)-(FilePath)`` does: `path` holds either its old content or the whole
    /// new snapshot, never a part of it.
    ///
    /// As with ``save(to:)-(FileDescriptor)``, the snapshot holds whole pages; pass the
    /// ``count`` to ``init(loading:count:)-(FilePath,_)`` if it is not a multiple of
    /// ``Region/pageSize``.
    ///
    /// - Parameter path: the file to create or replace.
    /// - Throws: ``CowMemError`` with code ``CowMemError/Code/invalidSize`` for an empty
    ///   buffer, and the errors of ``Region/save(to:)-(FilePath)``.
    ///
    /// The C function is `cowmem_save`, called on a temporary file.
    public func save(to path: FilePath) throws(CowMemError) {
        try storageToSave(for: "CowBuffer.save(to:)").save(to: path)
    }

    /// Opens a snapshot as a buffer of its first `count` bytes (all of them by default),
    /// reading pages from the file on first access as ``Region/init(loading:)-(FileDescriptor)``
    /// does.
    ///
    /// - Parameters:
    ///   - file: a snapshot file open for reading; the caller may close it at once.
    ///   - count: the buffer's count: from zero (the empty buffer) to the snapshot's size;
    ///     `nil` for the snapshot's size.
    /// - Throws: ``CowMemError`` with code ``CowMemError/Code/invalidSize`` if `count` is
    ///   negative or larger than the snapshot, and the errors of
    ///   ``Region/init(loading:)-(FileDescriptor)``.
    ///
    /// The C function is `cowmem_load`.
    public init(loading file: FileDescriptor, count: Int? = nil) throws(CowMemError) {
        try self.init(loaded: try Region(loading: file), count: count)
    }

    /// Opens the snapshot at `path` as a buffer of its first `count` bytes (all of them by
    /// default), as ``Region/init(loading:)-(FilePath)`` does.
    ///
    /// ```swift
    /// try buffer.save(to: "image.cowmem")
    /// let restored = try CowBuffer(loading: "image.cowmem", count: buffer.count)
    /// ```
    ///
    /// - Parameters:
    ///   - path: the snapshot file.
    ///   - count: the buffer's count: from zero (the empty buffer) to the snapshot's size;
    ///     `nil` for the snapshot's size.
    /// - Throws: ``CowMemError`` with code ``CowMemError/Code/invalidSize`` if `count` is
    ///   negative or larger than the snapshot, and the errors of
    ///   ``Region/init(loading:)-(FilePath)``.
    ///
    /// The C function is `cowmem_load`.
    public init(loading path: FilePath, count: Int? = nil) throws(CowMemError) {
        try self.init(loaded: try Region(loading: path), count: count)
    }

    private init(loaded region: consuming Region, count: Int?) throws(CowMemError) {
        if let count, count < 0 || count > region.size {
            throw CowMemError(
                refusing: .invalidSize, in: "CowBuffer(loading:count:)",
                because: "count is \(count); the snapshot has \(region.size) bytes")
        }
        self.init(adopting: region, count: count)
    }

    private func storageToSave(for api: String) throws(CowMemError) -> CowBufferStorage {
        guard let storage else {
            throw CowMemError(
                refusing: .invalidSize, in: api,
                because: "the buffer is empty; it has no region, and a snapshot holds at least one page")
        }
        return storage
    }
}

extension CowBufferStorage {
    func save(to file: FileDescriptor) throws(CowMemError) { try region.save(to: file) }
    func save(to path: FilePath) throws(CowMemError) { try region.save(to: path, for: "CowBuffer.save(to:)") }
}

/// The system calls that saving and loading by path make, with their failures as
/// ``CowMemError``s that name the call and the path.
internal enum FileOperations {
    static func open(
        _ path: FilePath, _ mode: FileDescriptor.AccessMode,
        options: FileDescriptor.OpenOptions = [], permissions: FilePermissions? = nil
    ) throws(CowMemError) -> FileDescriptor {
        do {
            return try FileDescriptor.open(
                path, mode, options: options.union(.closeOnExec), permissions: permissions,
                retryOnInterrupt: true)
        } catch {
            throw CowMemError(error as? Errno ?? .ioError, fromSystemCall: "open(\"\(path)\")")
        }
    }

    static func closeQuietly(_ file: FileDescriptor) {
        _ = try? file.close()
    }

    /// `fsync(2)`, retried when interrupted.
    static func sync(_ file: FileDescriptor, path: FilePath) throws(CowMemError) {
        while fsync(file.rawValue) != 0 {
            let error = Errno(rawValue: errno)
            if error != .interrupted { throw CowMemError(error, fromSystemCall: "fsync(\"\(path)\")") }
        }
    }

    /// `rename(2)`.
    static func rename(_ source: FilePath, to target: FilePath) throws(CowMemError) {
        let result = source.withPlatformString { from in
            target.withPlatformString { to in
                #if canImport(Glibc)
                Glibc.rename(from, to)
                #else
                Musl.rename(from, to)
                #endif
            }
        }
        if result != 0 {
            throw CowMemError(Errno(rawValue: errno), fromSystemCall: "rename(\"\(source)\", \"\(target)\")")
        }
    }

    /// `unlink(2)`, for a temporary file that is no longer wanted; a failure leaves it behind.
    static func removeQuietly(_ path: FilePath) {
        _ = path.withPlatformString { unlink($0) }
    }
}

/// A new file beside `target`, to be renamed over it once it is complete and on disk.
internal struct TemporaryFile {
    let target: FilePath
    let path: FilePath
    let directory: FilePath
    let descriptor: FileDescriptor

    init(replacing target: FilePath, for api: String) throws(CowMemError) {
        guard let name = target.lastComponent, name.kind == .regular else {
            throw CowMemError(
                refusing: .systemError, in: api,
                because: "the path \"\(target)\" does not name a file")
        }
        let parent = target.removingLastComponent()
        directory = parent.isEmpty ? "." : parent
        // Hidden, and unique among the processes and threads that may save the same target.
        let unique = String(UInt64.random(in: 0...UInt64.max), radix: 36)
        path = parent.appending(".\(name).\(getpid())-\(unique).tmp")
        descriptor = try FileOperations.open(
            path, .writeOnly, options: [.create, .exclusiveCreate],
            permissions: FilePermissions(rawValue: 0o666))
        self.target = target
    }

    /// Flushes the file, closes it, renames it over the target and flushes the directory.
    /// A failure before the rename removes the temporary file.
    func commit() throws(CowMemError) {
        do {
            try FileOperations.sync(descriptor, path: path)
        } catch {
            discard()
            throw error
        }
        do {
            try descriptor.close()
        } catch {
            // Linux releases the descriptor even when close reports an error.
            FileOperations.removeQuietly(path)
            throw CowMemError(error as? Errno ?? .ioError, fromSystemCall: "close(\"\(path)\")")
        }
        do {
            try FileOperations.rename(path, to: target)
        } catch {
            FileOperations.removeQuietly(path)
            throw error
        }
        // The rename is durable only once the directory's entry is on disk too. Some file
        // systems cannot fsync a directory (EINVAL): there the rename is as durable as it gets.
        let directoryFile = try FileOperations.open(directory, .readOnly, options: [.directory])
        defer { FileOperations.closeQuietly(directoryFile) }
        do {
            try FileOperations.sync(directoryFile, path: directory)
        } catch where error.underlyingError == .invalidArgument {
        }
    }

    /// Closes and removes the temporary file, after a failure to write it.
    func discard() {
        FileOperations.closeQuietly(descriptor)
        FileOperations.removeQuietly(path)
    }
}
