// Listener: a listening TCP socket on the loop (evconnlistener), optionally SO_REUSEPORT so
// several single-loop processes share one port (style E.8).
// Owns: the evconnlistener (freed in close()). Accepted fds are handed to `onAccept`, which
// takes ownership of them.
import CEventShim

#if canImport(Glibc)
import Glibc
#endif

public enum ListenerError: Error, Equatable {
    case badAddress(String)
    case bindFailed(String, Int32)
}

public final class Listener {
    private var listener: OpaquePointer?
    public var onAccept: ((Int32) -> Void)?
    /// The port actually bound (useful with port 0).
    public private(set) var port: Int = 0

    public init(loop: Loop, host: String, port: Int, reusePort: Bool, backlog: Int32 = 1024,
                onAccept: @escaping (Int32) -> Void) throws(ListenerError) {
        self.onAccept = onAccept
        var storage = sockaddr_storage()
        var len = Int32(MemoryLayout<sockaddr_storage>.size)
        // evutil_parse_sockaddr_port rejects ":0"; an address without a port parses as port 0.
        let bracketed = host.contains(":") ? "[\(host)]" : host
        let spec = port == 0 ? bracketed : "\(bracketed):\(port)"
        let ok = withUnsafeMutablePointer(to: &storage) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sp in
                evutil_parse_sockaddr_port(spec, sp, &len)
            }
        }
        if ok != 0 {
            // Not a literal: resolve the name once (start-up only), first address.
            var hints = addrinfo()
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            hints.ai_flags = AI_PASSIVE
            var res: UnsafeMutablePointer<addrinfo>?
            guard getaddrinfo(host, String(port), &hints, &res) == 0, let ai = res else { throw .badAddress(spec) }
            defer { freeaddrinfo(res) }
            withUnsafeMutableBytes(of: &storage) { dst in
                dst.copyMemory(from: UnsafeRawBufferPointer(start: ai.pointee.ai_addr, count: Int(ai.pointee.ai_addrlen)))
            }
            len = Int32(ai.pointee.ai_addrlen)
        }
        var flags = UInt32(LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC)
        if reusePort { flags |= UInt32(LEV_OPT_REUSEABLE_PORT) }
        let l = withUnsafePointer(to: &storage) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sp in
                evconnlistener_new_bind(loop.base, { _, fd, _, _, arg in
                    let me = Unmanaged<Listener>.fromOpaque(arg!).takeUnretainedValue()
                    me.onAccept?(fd)
                }, Unmanaged.passUnretained(self).toOpaque(), flags, backlog, sp, len)
            }
        }
        guard let l else { throw .bindFailed(spec, errno) }
        listener = l
        // Read back the bound port.
        let fd = evconnlistener_get_fd(l)
        var bound = sockaddr_storage()
        var blen = socklen_t(MemoryLayout<sockaddr_storage>.size)
        withUnsafeMutablePointer(to: &bound) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sp in _ = getsockname(fd, sp, &blen) }
        }
        if bound.ss_family == sa_family_t(AF_INET6) {
            self.port = withUnsafePointer(to: &bound) {
                $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin6_port)) }
            }
        } else {
            self.port = withUnsafePointer(to: &bound) {
                $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin_port)) }
            }
        }
    }

    /// Stops accepting (graceful drain) without closing the socket.
    public func pause() { if let l = listener { evconnlistener_disable(l) } }

    public func close() {
        if let l = listener { evconnlistener_free(l) }
        listener = nil
        onAccept = nil
    }

    deinit { if let l = listener { evconnlistener_free(l) } }
}
