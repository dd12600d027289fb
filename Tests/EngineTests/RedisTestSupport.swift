// Shared helpers for the EngineTests that talk to a real redis-server (ENGINE_TEST_REDIS_URL):
// the URL, running the loop until something happens, and a connected RedisConnection.
import Reactor
@testable import Engine

#if canImport(Glibc)
import Glibc
#endif

/// The test redis-server's URL (nil: the live Redis suites are disabled and reported as skipped).
let testRedisURL: RedisURL? = getenv("ENGINE_TEST_REDIS_URL").flatMap { RedisURL.parse(String(cString: $0)) }

/// Runs `loop` until `done` or `timeout`; returns `done()`.
@discardableResult
func spin(_ loop: Loop, timeout: Duration = .seconds(5), until done: () -> Bool) -> Bool {
    let t = Reactor.Timer(loop: loop)
    var expired = false
    t.onFire = { expired = true }
    t.schedule(after: timeout)
    while !done() && !expired { loop.runOnce() }
    t.close()
    return done()
}

/// A connection to the test redis-server, connected (or given up on after the spin's timeout).
func connectTestRedis(_ loop: Loop) -> RedisConnection {
    let c = RedisConnection(loop: loop, url: testRedisURL ?? RedisURL(host: "127.0.0.1"),
                            commandTimeout: .seconds(3), connectTimeout: .seconds(2))
    c.connect()
    spin(loop) { c.isConnected }
    return c
}
