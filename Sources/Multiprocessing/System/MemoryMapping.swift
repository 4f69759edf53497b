import CMultiprocessing
import Glibc
import SystemPackage

/// A `MAP_SHARED` mapping of a file descriptor's whole contents: what two processes map
/// from the same memfd or `/dev/shm` file is the same memory.
///
/// It keeps the address as an integer, so it is a plain `Sendable` value: the bytes behind
/// it are shared between processes by design, and every type built on a mapping says how
/// they are synchronised (atomics, process-shared locks).
struct MemoryMapping: Sendable {
    private let address: UInt
    let size: Int

    /// The first byte.
    var base: UnsafeMutableRawPointer { UnsafeMutableRawPointer(bitPattern: address)! }

    /// Maps `size` bytes of `descriptor`, readable and writable.
    init(_ descriptor: FileDescriptor, size: Int) throws(Errno) {
        precondition(size > 0, "a mapping has at least one byte")
        guard let mapped = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, descriptor.rawValue, 0),
            mapped != MAP_FAILED
        else { throw Errno(rawValue: errno) }
        address = UInt(bitPattern: mapped)
        self.size = size
    }

    /// Maps the whole of a file someone else sized (a memfd received, a named segment);
    /// closes `descriptor` if it cannot, so the caller owns nothing on failure.
    init(wholeFileOf descriptor: FileDescriptor) throws(Errno) {
        do throws(Errno) {
            let size = try descriptor.fileSize()
            guard size > 0 else { throw Errno.invalidArgument }
            try self.init(descriptor, size: size)
        } catch {
            descriptor.closeIgnoringErrors()
            throw error
        }
    }

    func unmap() { munmap(base, size) }
}

/// An anonymous memory file (`memfd_create(2)`), close-on-exec, mode 0600, `size` bytes of
/// zeros, its size sealed. It has no name in any directory: when the last descriptor and
/// mapping are gone, so is the memory, whatever way the processes ended.
///
/// Sealed (`F_SEAL_SHRINK`, `F_SEAL_GROW`): every process that holds the descriptor maps the
/// whole file, and one that shrank it would make the others' next access to the lost pages a
/// SIGBUS. No process can, whatever it runs; nothing of the library resizes a region.
///
/// Mode 0600 because the kernel makes a memory file 0777, execute bits included (shared bytes
/// could be run with `fexecve`). Only a process allowed into this one's `/proc/<pid>/fd` can
/// reach it by a path, and that is this user's (see SECURITY.md); 0600 says the same in the
/// file's own mode, as for named segments.
func makeMemoryFile(size: Int) throws(Errno) -> FileDescriptor {
    let descriptor = FileDescriptor(rawValue: try systemCall { mp_memfd_create("swift-multiprocessing") })
    do throws(Errno) {
        _ = try systemCall { fchmod(descriptor.rawValue, 0o600) }
        _ = try systemCall { ftruncate(descriptor.rawValue, off_t(size)) }
        _ = try systemCall { mp_memfd_seal_size(descriptor.rawValue) }
    } catch {
        descriptor.closeIgnoringErrors()
        throw error
    }
    return descriptor
}

extension FileDescriptor {
    /// The size of the file, from `fstat(2)`.
    func fileSize() throws(Errno) -> Int {
        var status = Glibc.stat()
        _ = try systemCall { Glibc.fstat(rawValue, &status) }
        return Int(status.st_size)
    }
}
