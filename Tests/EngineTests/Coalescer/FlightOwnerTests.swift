// FlightOwner: the name a claim reads from the stack is the name Redis gets as a String.
import Testing
#if canImport(Glibc)
import Glibc
#endif
@testable import Engine

@Suite struct FlightOwnerTests {
    @Test(arguments: [UInt64(0), 9, 10, 99, 1234567, UInt64.max])
    func bytesAndStringAgree(_ n: UInt64) {
        let o = FlightOwner(instance: "4242.deadbeef", flight: n)
        #expect(o.string == "4242.deadbeef-\(n)")
        #expect(o.withOwnerBytes { Array($0) } == Array(o.string.utf8))
        #expect("x-1".withOwnerBytes { Array($0) } == Array("x-1".utf8))
    }

    @Test func aClaimTakenByNameIsHeldByTheValue() throws {
        guard case .success(let fd) = SharedMemoryCacheStore.create(maxEntries: 16, maxBytes: 1 << 16),
              let s = SharedMemoryCacheStore(fd: fd) else { Issue.record("no segment"); return }
        defer { s.close(); _ = Glibc.close(fd) }
        let o = FlightOwner(instance: "A", flight: 17)
        #expect(s.claim("k", ownerName: o, now: 1) == .won)
        #expect(s.claim("k", owner: "B-1", now: 2) == .lost(owner: "A-17"))
        #expect(s.claimHeld("k", owner: "A-17", now: 3))
        #expect(!s.claimHeld("k", owner: FlightOwner(instance: "A", flight: 1), now: 3))
        #expect(s.endClaim("k", owner: o, now: 4, keep: false) == 0)
        #expect(s.claim("k", owner: "B-1", now: 5) == .won)
    }
}
