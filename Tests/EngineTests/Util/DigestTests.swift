// Digest: SHA-256 through a digest context fetched once per thread (ces_sha256). Known answers,
// and the same digest as OpenSSL's one-shot SHA256() (what APIKeyAuth uses) for random inputs of
// every length around the block size, one after another on the same context.
import Testing
@testable import Engine

@Suite struct DigestTests {
    @Test func knownAnswers() {
        #expect(Digest.hex(Digest.sha256(Array("abc".utf8))) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(Digest.hex(Digest.sha256([UInt8]())) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(Digest.hex(Digest.sha256([UInt8](repeating: 0x61, count: 1_000_000)))
                == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
        let raw = Array("abc".utf8).withUnsafeBytes { Digest.sha256($0) }
        #expect(Digest.hex(raw) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    @Test func sameAsTheOneShotDigest() {
        var rng = TestRNG(seed: 3)
        for n in 0..<300 {
            let text = String((0..<n).map { _ in Character(UnicodeScalar(UInt8.random(in: 0x20...0x7E, using: &rng))) })
            #expect(Digest.hex(Digest.sha256(Array(text.utf8))) == APIKeyAuth.identity(of: text), "length \(n)")
        }
    }
}
