import Foundation
import NetAddress

/// The addresses of this host's interfaces (both families, loopback included), from getifaddrs(3).
/// Mail to `postmaster@[one of these]` is local, and later the route planner uses them to find itself in an MX set.
enum LocalAddresses {
    static func interfaceAddresses() -> Set<IPAddress> {
        var result = Set<IPAddress>()
        var list: UnsafeMutablePointer<ifaddrs>? = nil
        guard getifaddrs(&list) == 0 else { return result }
        defer { freeifaddrs(list) }
        var cursor = list
        while let entry = cursor {
            defer { cursor = entry.pointee.ifa_next }
            guard let address = entry.pointee.ifa_addr else { continue }
            switch Int32(address.pointee.sa_family) {
            case AF_INET:
                address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { v4 in
                    let raw = v4.pointee.sin_addr.s_addr.bigEndian
                    result.insert(
                        .v4(
                            IPv4Address(
                                UInt8(raw >> 24), UInt8(raw >> 16 & 0xff), UInt8(raw >> 8 & 0xff), UInt8(raw & 0xff))))
                }
            case AF_INET6:
                address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { v6 in
                    let bytes = withUnsafeBytes(of: v6.pointee.sin6_addr) { Array($0) }
                    result.insert(.v6(IPv6Address(bytes: bytes)))
                }
            default:
                break
            }
        }
        return result
    }
}
