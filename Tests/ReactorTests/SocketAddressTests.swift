// SocketAddress.describe: how the access log prints a client's address.
import CEventShim
import Testing
@testable import Reactor

#if canImport(Glibc)
import Glibc
#endif

@Suite struct SocketAddressTests {
    private func v4(_ ip: String, _ port: UInt16) -> sockaddr_storage {
        var st = sockaddr_storage()
        withUnsafeMutablePointer(to: &st) {
            $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { p in
                p.pointee.sin_family = sa_family_t(AF_INET)
                p.pointee.sin_port = port.bigEndian
                _ = inet_pton(AF_INET, ip, &p.pointee.sin_addr)
            }
        }
        return st
    }

    private func v6(_ ip: String, _ port: UInt16) -> sockaddr_storage {
        var st = sockaddr_storage()
        withUnsafeMutablePointer(to: &st) {
            $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { p in
                p.pointee.sin6_family = sa_family_t(AF_INET6)
                p.pointee.sin6_port = port.bigEndian
                _ = inet_pton(AF_INET6, ip, &p.pointee.sin6_addr)
            }
        }
        return st
    }

    @Test func formats() {
        #expect(SocketAddress.describe(v4("10.1.2.3", 54321)) == "10.1.2.3:54321")
        #expect(SocketAddress.describe(v6("2001:db8::1", 443)) == "[2001:db8::1]:443")
        #expect(SocketAddress.describe(v6("::ffff:192.0.2.7", 80)) == "192.0.2.7:80")
        #expect(SocketAddress.describe(sockaddr_storage()) == nil)
    }

    @Test func peerOfALoopbackConnection() {
        let l = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(l) }
        var st = v4("127.0.0.1", 0)
        let len = socklen_t(MemoryLayout<sockaddr_in>.size)
        #expect(withUnsafePointer(to: &st) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(l, $0, len) } } == 0)
        #expect(listen(l, 1) == 0)
        var bound = sockaddr_storage()
        var blen = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &bound) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(l, $0, &blen) } }
        let c = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(c) }
        #expect(withUnsafePointer(to: &bound) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(c, $0, blen) } } == 0)
        let s = accept(l, nil, nil)
        defer { close(s) }
        let peer = SocketAddress.peer(of: s)
        #expect(peer?.hasPrefix("127.0.0.1:") == true)
        #expect(SocketAddress.peer(of: -1) == nil)
    }
}
