// ResponseHeaders: the header sets uvicorn puts on vLLM's answers (date, server: uvicorn,
// content-type, vary: Origin), prebuilt and refreshed once a second so a response copies an array
// reference instead of building strings. Content-Length / Transfer-Encoding come from
// HTTPServerConnection. Plain value owned by SimServer.

#if canImport(Glibc)
import Glibc
#endif
import Reactor

struct ResponseHeaders {
    private var second = -1
    private(set) var json = HTTPHeaders()
    private(set) var sse = HTTPHeaders()
    private(set) var empty = HTTPHeaders()
    private(set) var metrics = HTTPHeaders()
    private var date = HTTPHeaders.Field("date", "")

    mutating func refresh() {
        let now = Int(time(nil))
        guard now != second else { return }
        second = now
        date = HTTPHeaders.Field("date", httpDate(now))
        let server = HTTPHeaders.Field("server", "uvicorn")
        let vary = HTTPHeaders.Field("vary", "Origin")
        json = HTTPHeaders([date, server, .init("content-type", "application/json"), vary])
        sse = HTTPHeaders([date, server, .init("content-type", "text/event-stream; charset=utf-8"), vary])
        empty = HTTPHeaders([date, server, vary])
        metrics = HTTPHeaders([date, server, .init("content-type", "text/plain; version=1.0.0; charset=utf-8"), vary])
    }

    /// A binary pooling answer (`encoding_format` bytes / bytes_only), with the layout header
    /// where vLLM puts it (after `server`).
    func octetStream(metadata: String?) -> HTTPHeaders {
        var fields = [date, HTTPHeaders.Field("server", "uvicorn")]
        if let metadata { fields.append(.init("metadata", metadata)) }
        fields += [.init("content-type", "application/octet-stream"), .init("vary", "Origin")]
        return HTTPHeaders(fields)
    }

    /// The JSON set plus `allow`, as Starlette sends with a 405.
    func jsonAllowing(_ methods: String) -> HTTPHeaders {
        HTTPHeaders([date, .init("server", "uvicorn"), .init("allow", methods), .init("content-type", "application/json"),
                     .init("vary", "Origin")])
    }
}

/// IMF-fixdate, e.g. "Wed, 25 Nov 2026 15:18:14 GMT".
func httpDate(_ seconds: Int) -> String {
    var t = time_t(seconds)
    var parts = tm()
    gmtime_r(&t, &parts)
    let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
    return "\(days[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) "
        + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
}
