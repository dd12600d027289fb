// RedisScript: a Lua script run with EVALSHA — loaded (SCRIPT LOAD) on every connect of the
// connection it is registered with, and sent whole with EVAL only when Redis answers NOSCRIPT
// (restarted or flushed since). The cache store's and the cross-process flight's scripts use it,
// so no request sends a script's text. Immutable; the connection belongs to the caller.
import CEventShim
import Reactor

struct RedisScript: Sendable {
    let text: String
    let sha: [UInt8]
    private let textBytes: [UInt8]

    init(_ text: String) {
        self.text = text
        textBytes = Array(text.utf8)
        var md = [UInt8](repeating: 0, count: Int(CES_SHA1_BYTES))
        textBytes.withUnsafeBufferPointer { p in _ = ces_sha1(p.baseAddress, p.count, &md) }
        sha = Array(Digest.hex(md).utf8)
    }

    /// Loads the script on every (re)connect of `connection`.
    func register(on connection: RedisConnection) {
        connection.addSetupCommand(["SCRIPT", "LOAD", text])
    }

    /// EVALSHA with `keys` and `args`; on NOSCRIPT, EVAL (which also caches it again).
    func run(on connection: RedisConnection, keys: [[UInt8]], args: [[UInt8]], completion: @escaping (RedisValue) -> Void) {
        var tail: [[UInt8]] = [Array(String(keys.count).utf8)]
        tail.append(contentsOf: keys)
        tail.append(contentsOf: args)
        let text = textBytes
        connection.send([Array("EVALSHA".utf8), sha] + tail) { [weak connection] v in
            if case .error(let e) = v, e.hasPrefix("NOSCRIPT"), let connection {
                connection.send([Array("EVAL".utf8), text] + tail, completion: completion)
            } else {
                completion(v)
            }
        }
    }
}
