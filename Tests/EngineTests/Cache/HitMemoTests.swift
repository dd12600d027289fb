// HitMemo's table: what was put is found (also among keys sharing the word the table indexes
// by), a put replaces, and the memo starts over when full — against a Dictionary as the model.
import Testing

@testable import Engine

@Suite struct HitMemoTests {
    private func key(_ n: Int) -> HitMemo.Key {
        var b = Array("request \(n)".utf8)
        return b.withUnsafeMutableBytes { HitMemo.Key(sha256: UnsafeRawBufferPointer($0)) }
    }

    private func entry(_ n: Int) -> HitMemo.Entry {
        HitMemo.Entry(cacheKey: "k\(n)", servedModel: "m", requestedModel: nil, routed: false, stream: false, includeUsage: false)
    }

    @Test func actsAsADictionaryClearedWhenFull() {
        var rng = TestRNG(seed: 5)
        for capacity in [1, 3, 50, 1000] {
            let memo = HitMemo(capacity: capacity)
            var model: [HitMemo.Key: String] = [:]
            for _ in 0..<5000 {
                let n = Int.random(in: 0..<(2 * capacity + 10), using: &rng)
                let k = key(n)
                if Bool.random(using: &rng) {
                    if model.count >= capacity { model.removeAll() }
                    let e = entry(Int.random(in: 0..<1_000_000, using: &rng))
                    memo.put(k, e)
                    model[k] = e.cacheKey
                } else {
                    #expect(memo.get(k)?.cacheKey == model[k], "capacity \(capacity) key \(n)")
                }
                #expect(memo.count == model.count)
            }
        }
    }

    @Test func keysSharingTheIndexedWordAreTold() throws {
        let memo = HitMemo(capacity: 100)
        let a = key(1)
        // The same first word (the table's index), different digests.
        var b = a.bytes
        b[31] ^= 1
        var c = a.bytes
        c[8] ^= 0x80
        let kb = b.withUnsafeBytes { $0.loadUnaligned(as: HitMemo.Key.self) }
        let kc = c.withUnsafeBytes { $0.loadUnaligned(as: HitMemo.Key.self) }
        #expect(kb.w0 == a.w0 && kc.w0 == a.w0 && kb != a && kc != a)
        memo.put(a, entry(1))
        memo.put(kb, entry(2))
        #expect(memo.get(a)?.cacheKey == "k1")
        #expect(memo.get(kb)?.cacheKey == "k2")
        #expect(memo.get(kc) == nil)
        memo.put(kc, entry(3))
        memo.put(a, entry(4))
        #expect(try #require(memo.get(a)).cacheKey == "k4" && memo.get(kc)?.cacheKey == "k3" && memo.count == 3)
    }
}
