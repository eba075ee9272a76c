import SystemPackage

/// An error from CowMem: what went wrong, in CowMem's terms, and the `errno` behind it.
///
/// Compare ``code`` with the static members of ``Code``; ``underlyingError`` holds the
/// `errno` the C library reported, when there was one.
///
/// ```swift
/// do {
///     let region = try Region(size: 0)
/// } catch {
///     // error.code == .invalidSize, error.underlyingError == .invalidArgument
/// }
/// ```
public struct CowMemError: Error, Hashable, Sendable {
    /// What kind of failure this is. New codes may be added in later versions:
    /// compare with `==`, and keep a default branch when you switch over them.
    public struct Code: Hashable, Sendable {
        // A private enum behind a struct, so that cases can be added without
        // breaking anyone's exhaustive switch.
        internal enum Storage: Hashable, Sendable {
            case invalidSize
            case outOfMemory
            case outOfFileDescriptors
            case faultServerUnavailable
            case notASnapshot
            case unusableFileDescriptor
            case systemError
        }

        internal let storage: Storage

        internal init(_ storage: Storage) {
            self.storage = storage
        }

        /// The size is not a positive number of bytes (`EINVAL`).
        public static var invalidSize: Code { Code(.invalidSize) }

        /// The memory cannot be reserved or mapped (`ENOMEM`, or `EOVERFLOW` for a
        /// size too large to map at all).
        public static var outOfMemory: Code { Code(.outOfMemory) }

        /// The process or the system has no file descriptor left (`EMFILE`, `ENFILE`).
        public static var outOfFileDescriptors: Code { Code(.outOfFileDescriptors) }

        /// The thread that serves page faults could not be started.
        public static var faultServerUnavailable: Code { Code(.faultServerUnavailable) }

        /// The file is not a CowMem snapshot: its header is wrong, it is shorter than the
        /// header says, or it was saved on a system with another page size (`EINVAL` from
        /// `cowmem_load`).
        public static var notASnapshot: Code { Code(.notASnapshot) }

        /// The file descriptor cannot be used for this: it is not open, or not open for
        /// reading (loading) or writing (saving) (`EBADF`); it is not seekable, like a pipe
        /// or a socket (`ESPIPE`); or it was opened with `O_APPEND` (`EINVAL` from
        /// `cowmem_save`).
        public static var unusableFileDescriptor: Code { Code(.unusableFileDescriptor) }

        /// Any other failure of a system call; ``CowMemError/underlyingError`` says which.
        public static var systemError: Code { Code(.systemError) }
    }

    /// What kind of failure this is.
    public let code: Code

    /// The `errno` value the C library (or the system) reported, if any.
    public let underlyingError: Errno?

    /// The C function that failed, for the description.
    internal let function: String

    internal init(code: Code, underlyingError: Errno?, function: String) {
        self.code = code
        self.underlyingError = underlyingError
        self.function = function
    }

    /// Classifies an `errno` that a region call reported.
    internal init(_ errno: Errno, from function: String) {
        let code: Code
        switch errno {
        case .noMemory, .overflow:
            code = .outOfMemory
        case .tooManyOpenFiles, .tooManyOpenFilesInSystem:
            code = .outOfFileDescriptors
        default:
            code = .systemError
        }
        self.init(code: code, underlyingError: errno, function: function)
    }
}

extension CowMemError.Code: CustomStringConvertible {
    public var description: String {
        switch storage {
        case .invalidSize: "invalid size"
        case .outOfMemory: "out of memory"
        case .outOfFileDescriptors: "out of file descriptors"
        case .faultServerUnavailable: "fault server unavailable"
        case .notASnapshot: "not a CowMem snapshot"
        case .unusableFileDescriptor: "unusable file descriptor"
        case .systemError: "system error"
        }
    }
}

extension CowMemError: CustomStringConvertible {
    /// For example `cowmem_create failed: invalid size (Invalid argument)`.
    public var description: String {
        var text = "\(function) failed: \(code)"
        if let underlyingError {
            text += " (\(underlyingError))"
        }
        return text
    }
}
