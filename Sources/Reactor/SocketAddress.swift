// SocketAddress: the printable address of a connected socket's peer (`getpeername` + `inet_ntop`),
// for access logs. Stateless; start-up and per-connection use only, never per chunk.
import CEventShim

#if canImport(Glibc)
import Glibc
#endif

public enum SocketAddress {
    /// `ip:port` for IPv4, `[ip]:port` for IPv6 (an IPv4-mapped IPv6 peer prints as IPv4),
    /// `unix` for a Unix socket; nil when the socket has no peer (closed, or not a socket).
    public static func peer(of fd: Int32) -> String? {
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &len) }
        }
        guard rc == 0 else { return nil }
        return describe(storage)
    }

    static func describe(_ storage: sockaddr_storage) -> String? {
        var buf = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        var s = storage
        switch Int32(s.ss_family) {
        case AF_INET:
            return withUnsafePointer(to: &s) {
                $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin -> String? in
                    var a = sin.pointee.sin_addr
                    guard inet_ntop(AF_INET, &a, &buf, socklen_t(buf.count)) != nil else { return nil }
                    return text(buf) + ":" + String(UInt16(bigEndian: sin.pointee.sin_port))
                }
            }
        case AF_INET6:
            return withUnsafePointer(to: &s) {
                $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 -> String? in
                    var a = sin6.pointee.sin6_addr
                    guard inet_ntop(AF_INET6, &a, &buf, socklen_t(buf.count)) != nil else { return nil }
                    var ip = text(buf)
                    let port = String(UInt16(bigEndian: sin6.pointee.sin6_port))
                    if ip.hasPrefix("::ffff:"), ip.contains(".") {
                        ip.removeFirst(7)
                        return ip + ":" + port
                    }
                    return "[" + ip + "]:" + port
                }
            }
        case AF_UNIX:
            return "unix"
        default:
            return nil
        }
    }

    /// A NUL-terminated C string from inet_ntop as a String.
    private static func text(_ buf: [CChar]) -> String {
        let bytes = buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        return String(decoding: bytes, as: UTF8.self)
    }
}
