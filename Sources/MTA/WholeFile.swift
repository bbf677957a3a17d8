import Glibc

/// Why a file could not be read: the system call and errno, shown as the C library words it
/// (`open: No such file or directory`), so an administrator sees the cause, not just "cannot read".
struct FileReadError: Error, Equatable {
    let call: String
    let errno: Int32

    var reason: String { "\(call): \(String(cString: strerror(errno)))" }
}

/// Reads a whole (small) file into memory, retrying reads interrupted by a signal.
func readWholeFile(_ path: String) throws(FileReadError) -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw FileReadError(call: "open", errno: Glibc.errno) }
    defer { _ = close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 64 * 1024)
    while true {
        let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if count > 0 {
            bytes.append(contentsOf: chunk[0..<count])
        } else if count == 0 {
            return bytes
        } else if Glibc.errno != EINTR {
            throw FileReadError(call: "read", errno: Glibc.errno)
        }
    }
}
