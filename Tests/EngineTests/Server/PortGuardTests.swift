// PortGuard: a second claim of one address fails, by the lock (same host string) or by the probe
// (anything listening, SO_REUSEPORT or not); port 0 and a released claim pass.
import CEventShim
import Testing

@testable import Engine

#if canImport(Glibc)
import Glibc
#endif

@Suite(.serialized) struct PortGuardTests {
    /// A private lock directory per test, so that parallel runs do not meet.
    private static func tempDir() -> String {
        var template = Array("/tmp/portguard-XXXXXX".utf8CString)
        let p = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(p != nil)
        return String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Removes a directory made by tempDir and the lock files in it.
    private static func remove(_ dir: String) {
        if let d = opendir(dir) {
            while let e = readdir(d) {
                let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                if name != "." && name != ".." { unlink(dir + "/" + name) }
            }
            closedir(d)
        }
        rmdir(dir)
    }

    /// A free loopback port, found by binding port 0 and closing.
    private static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        _ = withUnsafeMutablePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return Int(UInt16(bigEndian: a.sin_port))
    }

    /// A loopback listener on a port the kernel picks, with SO_REUSEPORT as every Engine listener
    /// has it. (Not on a port found free first: between that and this bind, another test's
    /// socket could take it, and the bind failed.)
    private static func listenReusePort() -> (fd: Int32, port: Int) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, socklen_t(MemoryLayout<Int32>.size))
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let rc = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        precondition(rc == 0 && listen(fd, 8) == 0)
        _ = withUnsafeMutablePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return (fd, Int(UInt16(bigEndian: a.sin_port)))
    }

    @Test func aSecondClaimOfTheSameAddressIsRefusedWithThePid() throws {
        let dir = Self.tempDir()
        defer { Self.remove(dir) }
        let port = Self.freePort()
        let first = try PortGuard.claim(host: "127.0.0.1", port: port, lockDirectory: dir).get()
        let second = PortGuard.claim(host: "127.0.0.1", port: port, lockDirectory: dir)
        #expect(second.failureValue == .heldByEngine(address: "127.0.0.1:\(port)", pid: getpid()))
        #expect(second.failureValue?.description.contains("server.share_port: true") == true)
        first.release()
        let third = try PortGuard.claim(host: "127.0.0.1", port: port, lockDirectory: dir).get()
        third.release()
    }

    @Test func aListenerOfAnyKindIsFound() {
        let dir = Self.tempDir()
        defer { Self.remove(dir) }
        let (l, port) = Self.listenReusePort()
        #expect(PortGuard.isListenedOn(host: "127.0.0.1", port: port))
        #expect(PortGuard.isListenedOn(host: "0.0.0.0", port: port))  // the wildcard overlaps it
        let r = PortGuard.claim(host: "127.0.0.1", port: port, lockDirectory: dir)
        #expect(r.failureValue == .listening(address: "127.0.0.1:\(port)"))
        close(l) // once: a second close could close another test's descriptor of the same number
        // The refused claim left the lock free for the next attempt. (The port itself may be taken
        // meanwhile by another test's connection: only the lock is checked.)
        let again = PortGuard.claim(host: "127.0.0.1", port: port, lockDirectory: dir)
        if case .heldByEngine? = again.failureValue { Issue.record("the refused claim kept the lock") }
        (try? again.get())?.release()
    }

    @Test func aPortWithoutListenerOrLockIsFree() {
        #expect(!PortGuard.isListenedOn(host: "127.0.0.1", port: Self.freePort()))
        #expect((try? PortGuard.claim(host: "127.0.0.1", port: 0, lockDirectory: "/nonexistent").get()) != nil)
        // No lock directory: the probe alone decides.
        #expect((try? PortGuard.claim(host: "127.0.0.1", port: Self.freePort(), lockDirectory: "/nonexistent").get()) != nil)
    }

    @Test func lockFileNames() {
        #expect(PortGuard.lockFileName(host: "0.0.0.0", port: 8000) == "engine-server.0.0.0.0.8000.lock")
        #expect(PortGuard.lockFileName(host: "::1", port: 80) == "engine-server.__1.80.lock")
        #expect(PortGuard.lockFileName(host: "../../etc/x", port: 1) == "engine-server..._.._etc_x.1.lock")
        #expect(PortGuard.lockFileName(host: "", port: 1) == "engine-server._.1.lock")
    }
}

extension Result {
    fileprivate var failureValue: Failure? {
        if case .failure(let f) = self { return f }
        return nil
    }
}
