// The default config's cross-process flights: the claim in the workers' shared-memory segment,
// the answer in Redis only once a reader joined. A real redis-server (ENGINE_TEST_REDIS_URL) and
// a real segment; two owners stand for two worker processes.
import CSharedCache
import Reactor
import Testing
@testable import Engine

#if canImport(Glibc)
import Glibc
#endif

/// The entry types ("h", "d", "e", ...) of a flight's Redis stream, in order.
private func entryTypes(_ loop: Loop, _ redis: RedisConnection, key: String, owner: String) -> [String] {
    var reply: RedisValue?
    redis.send(["XRANGE", RemoteFlightKeys.stream(key, owner: owner), "-", "+"]) { reply = $0 }
    spin(loop) { reply != nil }
    guard case .array(let entries)? = reply else { return ["?"] }
    return entries.map { e in
        guard case .array(let pair) = e, pair.count == 2, case .array(let kv) = pair[1], kv.count >= 2,
              case .string(let t) = kv[1] else { return "?" }
        return String(decoding: t, as: UTF8.self)
    }
}

private final class Collector: RemoteFlightReaderDelegate {
    var head: (Int, String)?
    var body: [UInt8] = []
    var ended: (Int, [UInt8]?)?
    var lost = false
    func remoteHead(_ r: RemoteFlightReader, status: Int, contentType: String) { head = (status, contentType) }
    func remoteBody(_ r: RemoteFlightReader, _ bytes: UnsafeRawBufferPointer) { body += bytes }
    func remoteEnd(_ r: RemoteFlightReader, status: Int, contentType: String, body: [UInt8]?) { ended = (status, body) }
    func remoteFailed(_ r: RemoteFlightReader, status: Int, body: [UInt8]) { ended = (status, body) }
    func remoteLost(_ r: RemoteFlightReader) { lost = true }
}

private func event(_ n: Int) -> [UInt8] { Array("data: {\"n\":\(n)}\n\n".utf8) }

@Suite(.enabled(if: testRedisURL != nil, "set ENGINE_TEST_REDIS_URL to a running redis-server"))
struct SharedFlightPublishingTests {
    let key = "enginetest-flight-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"

    private func setUp() throws -> (Loop, RedisConnection, SharedMemoryCacheStore, Int32) {
        let loop = Loop()
        let fd = try SharedMemoryCacheStore.create(maxEntries: 16, maxBytes: 1 << 20).get()
        let claims = try #require(SharedMemoryCacheStore(fd: fd))
        return (loop, connectTestRedis(loop), claims, fd)
    }

    @Test func aFlightNobodyFollowsWritesNothing() throws {
        let (loop, redis, claims, fd) = try setUp()
        defer { redis.close(); close(fd) }
        #expect(claims.claim(key, owner: "A-1", now: Loop.nowNanos()) == .won)
        let p = RemoteFlightPublisher(redis: redis, key: key, owner: FlightOwner(instance: "A", flight: 1), claims: claims)
        p.head(status: 200, contentType: "text/event-stream")
        var recorded: [UInt8] = []
        for n in 0..<3 {
            event(n).withUnsafeBytes { p.chunk($0, recorded: recorded, recordingEnds: false) }
            recorded += event(n)
        }
        p.end(status: 200, contentType: "text/event-stream", body: nil, recorded: recorded)
        #expect(!claims.claimHeld(key, owner: "A-1", now: Loop.nowNanos()))  // gone at once
        #expect(entryTypes(loop, redis, key: key, owner: "A-1") == [])
        p.close()
    }

    @Test func aReaderThatJoinsMidStreamGetsEverything() throws {
        let (loop, redis, claims, fd) = try setUp()
        defer { redis.close(); close(fd) }
        // Another worker maps the same segment.
        let other = try #require(SharedMemoryCacheStore(fd: fd))
        #expect(claims.claim(key, owner: "A-1", now: Loop.nowNanos()) == .won)
        let p = RemoteFlightPublisher(redis: redis, key: key, owner: FlightOwner(instance: "A", flight: 1), claims: claims)
        p.head(status: 200, contentType: "text/event-stream")
        var recorded: [UInt8] = []
        for n in 0..<2 {
            event(n).withUnsafeBytes { p.chunk($0, recorded: recorded, recordingEnds: false) }
            recorded += event(n)
        }
        #expect(other.claim(key, owner: "B-7", now: Loop.nowNanos()) == .lost(owner: "A-1"))
        let c = Collector()
        let r = RemoteFlightReader(redis: redis, loop: loop, key: key, owner: "A-1", flight: .init(1), delegate: c, claims: other)
        r.start()
        for n in 2..<4 {
            event(n).withUnsafeBytes { p.chunk($0, recorded: recorded, recordingEnds: false) }
            recorded += event(n)
        }
        p.end(status: 200, contentType: "text/event-stream", body: nil, recorded: recorded)
        // Kept (ENDING) until the end entry is written, then released.
        spin(loop) { !claims.claimHeld(key, owner: "A-1", now: Loop.nowNanos()) }
        #expect(entryTypes(loop, redis, key: key, owner: "A-1") == ["h", "d", "d", "d", "e"])
        #expect(spin(loop) { c.ended != nil })
        #expect(c.head?.0 == 200 && c.head?.1 == "text/event-stream")
        #expect(c.body == recorded)
        #expect(c.ended?.0 == 200 && c.ended?.1 == nil && !c.lost)
        r.stop()
        p.close()
    }

    @Test func aPlainAnswerIsWrittenOnlyForAReader() throws {
        let (loop, redis, claims, fd) = try setUp()
        defer { redis.close(); close(fd) }
        #expect(claims.claim(key, owner: "A-1", now: Loop.nowNanos()) == .won)
        #expect(claims.joinClaim(key, owner: "A-1", now: Loop.nowNanos()))
        let p = RemoteFlightPublisher(redis: redis, key: key, owner: FlightOwner(instance: "A", flight: 1), claims: claims)
        p.end(status: 200, contentType: "application/json", body: Array("{\"ok\":1}".utf8))
        spin(loop) { !claims.claimHeld(key, owner: "A-1", now: Loop.nowNanos()) }
        #expect(entryTypes(loop, redis, key: key, owner: "A-1") == ["e"])
        p.close()
    }

    @Test func aStreamTooLongToReplayClosesTheClaimToReaders() throws {
        let (loop, redis, claims, fd) = try setUp()
        defer { redis.close(); close(fd) }
        #expect(claims.claim(key, owner: "A-1", now: Loop.nowNanos()) == .won)
        let p = RemoteFlightPublisher(redis: redis, key: key, owner: FlightOwner(instance: "A", flight: 1), claims: claims)
        p.head(status: 200, contentType: "text/event-stream")
        event(0).withUnsafeBytes { p.chunk($0, recorded: [], recordingEnds: true) }
        // Later arrivals go alone rather than join a flight whose beginning is gone.
        #expect(claims.claim(key, owner: "B-1", now: Loop.nowNanos()) == .unavailable)
        #expect(!claims.joinClaim(key, owner: "A-1", now: Loop.nowNanos()))
        event(1).withUnsafeBytes { p.chunk($0, recorded: [], recordingEnds: false) }
        p.end(status: 200, contentType: "text/event-stream", body: nil, recorded: [])
        #expect(!claims.claimHeld(key, owner: "A-1", now: Loop.nowNanos()))
        #expect(entryTypes(loop, redis, key: key, owner: "A-1") == [])
        p.close()
    }

    @Test func aReaderOfALeaderThatDiedLooksAgain() throws {
        let (loop, redis, claims, fd) = try setUp()
        defer { redis.close(); close(fd) }
        // A claim whose lease ran out (its leader stopped refreshing): the reader cannot join.
        let past = Loop.nowNanos() - SharedMemoryCacheStore.claimLease.nanoseconds - 1
        #expect(claims.claim(key, owner: "A-1", now: past) == .won)
        let c = Collector()
        let r = RemoteFlightReader(redis: redis, loop: loop, key: key, owner: "A-1", flight: .init(1), delegate: c, claims: claims)
        r.start()
        #expect(spin(loop) { c.lost })
        #expect(c.ended == nil)
        r.stop()
    }
}
