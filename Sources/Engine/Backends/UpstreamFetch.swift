// UpstreamFetch: one small control-plane request to a backend (health, model list, metrics,
// /tokenize), with a deadline. Not on the data path: it reports through one completion closure.
// Owns: its Timer; borrows a connection from the backend's pool and returns or closes it.
import Reactor

final class UpstreamFetch: HTTPClientConnectionDelegate {
    private let pool: HTTPClientPool
    private var conn: HTTPClientConnection?
    private let timer: Timer
    private var status = 0
    private var body: [UInt8] = []
    private var onDone: ((Int?, [UInt8]) -> Void)?
    private var selfRef: UpstreamFetch?
    private let maxBytes: Int

    /// Starts at once; `onDone(status, body)` with status nil on failure or timeout.
    @discardableResult
    init(loop: Loop, pool: HTTPClientPool, path: String, headers: HTTPHeaders = HTTPHeaders(),
         timeout: Duration, maxBytes: Int = 1 << 20, method: String = "GET", body: [UInt8]? = nil,
         onDone: @escaping (Int?, [UInt8]) -> Void) {
        self.pool = pool
        self.timer = Timer(loop: loop)
        self.onDone = onDone
        self.maxBytes = maxBytes
        selfRef = self
        timer.onFire = { [unowned self] in self.finish(nil) }
        timer.schedule(after: timeout)
        let c = pool.acquire()
        conn = c
        c.delegate = self
        if let body {
            body.withUnsafeBytes { c.send(method: method, path: path, headers: headers, body: $0) }
        } else {
            c.send(method: method, path: path, headers: headers, body: nil)
        }
    }

    private func finish(_ st: Int?) {
        guard let done = onDone else { return }
        onDone = nil
        timer.close()
        if let c = conn {
            conn = nil
            if st != nil && !c.isClosed && !c.inExchange { pool.release(c) } else { c.close() }
        }
        done(st, body)
        selfRef = nil
    }

    func upstream(_ c: HTTPClientConnection, didReceiveHead status: Int, headers: HTTPHeaders) { self.status = status }
    func upstream(_ c: HTTPClientConnection, didReceiveBody bytes: UnsafeRawBufferPointer) {
        if body.count + bytes.count > maxBytes { finish(nil); return }
        body.append(contentsOf: bytes)
    }
    func upstreamDidFinish(_ c: HTTPClientConnection) { finish(status) }
    func upstream(_ c: HTTPClientConnection, didFail failure: HTTPClientFailure) { finish(nil) }
}
