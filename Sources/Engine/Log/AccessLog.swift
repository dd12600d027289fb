// AccessLog: one JSON line per finished request (HAProxy-style termination code included),
// written to stderr in batches: lines collect in an evbuffer and go out when 32 KiB have built up
// or 100 ms after the first line, so logging costs no syscall per request.
// Owns: the evbuffer and its flush Timer; loop-confined. Operational events go through swift-log.
import CEventShim
import Reactor

#if canImport(Glibc)
import Glibc
#endif

final class AccessLog {
    private let buffer: OpaquePointer
    private let timer: Timer
    private let fd: Int32

    init(loop: Loop, fd: Int32 = 2) {
        self.fd = fd
        buffer = evbuffer_new()
        timer = Timer(loop: loop)
        timer.onFire = { [unowned self] in self.flush() }
    }

    struct Entry {
        var requestId: String
        var route: String
        var modelAsked: String?
        var modelServed: String?
        var backend: String?
        var status: Int
        var cache: String
        var coalesced: Bool
        var bytesIn: Int
        var bytesOut: Int
        var ttfbSeconds: Double?
        var durationSeconds: Double
        var termination: Termination
    }

    func write(_ e: Entry) {
        var s = "{\"time\":"
        s += String(Loop.wallSeconds())
        s += ",\"request_id\":"; JSONText.appendQuoted(&s, e.requestId)
        s += ",\"route\":\"" + e.route + "\""
        s += ",\"model\":"; appendOptional(&s, e.modelAsked)
        s += ",\"served_model\":"; appendOptional(&s, e.modelServed)
        s += ",\"backend\":"; appendOptional(&s, e.backend)
        s += ",\"status\":" + String(e.status)
        s += ",\"cache\":\"" + e.cache + "\""
        s += ",\"coalesced\":" + (e.coalesced ? "true" : "false")
        s += ",\"bytes_in\":" + String(e.bytesIn)
        s += ",\"bytes_out\":" + String(e.bytesOut)
        s += ",\"ttfb_ms\":" + (e.ttfbSeconds.map { String(($0 * 1e6).rounded() / 1e3) } ?? "null")
        s += ",\"duration_ms\":" + String((e.durationSeconds * 1e6).rounded() / 1e3)
        s += ",\"termination\":\"" + e.termination.description + "\"}\n"
        evbufferAppend(buffer, s)
        if evbuffer_get_length(buffer) >= 32 * 1024 {
            flush()
        } else if !timer.isArmed {
            timer.schedule(after: .milliseconds(100))
        }
    }

    private func appendOptional(_ s: inout String, _ v: String?) {
        if let v { JSONText.appendQuoted(&s, v) } else { s += "null" }
    }

    func flush() {
        timer.cancel()
        while evbuffer_get_length(buffer) > 0 {
            if evbuffer_write(buffer, fd) <= 0 { break }
        }
    }

    func close() {
        flush()
        timer.close()
        evbuffer_free(buffer)
    }
}
