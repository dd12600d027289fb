// APIKeyAuth: plain and sha256 keys, header parsing, and the keys-file format.
import Testing
@testable import Engine

/// sha256("secret-one"), computed independently (sha256sum).
private let secretOneHex = "ea77193cc4e6f18656f3130e296203880c4b9b3772afc855211b82fdd46e9185"

@Suite struct APIKeyAuthTests {
    @Test func knownDigest() {
        #expect(APIKeyAuth.identity(of: "abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(APIKeyAuth.identity(of: "") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    }

    @Test func plainAndHashedKeys() throws {
        let auth = try APIKeyAuth(keys: ["plain-key", "sha256:" + secretOneHex.uppercased()])
        #expect(auth.keyCount == 2)
        #expect(auth.authenticate(authorizationHeader: "Bearer plain-key") == .ok(identity: APIKeyAuth.identity(of: "plain-key")))
        #expect(auth.authenticate(authorizationHeader: "Bearer secret-one") == .ok(identity: secretOneHex))
        // The configured digest is not itself a key.
        #expect(auth.authenticate(authorizationHeader: "Bearer sha256:" + secretOneHex) == .invalid)
    }

    @Test func wrongOrMissing() throws {
        let auth = try APIKeyAuth(keys: ["k1"])
        #expect(auth.authenticate(authorizationHeader: "Bearer k2") == .invalid)
        #expect(auth.authenticate(authorizationHeader: "Bearer k1x") == .invalid)
        #expect(auth.authenticate(authorizationHeader: "Bearer K1") == .invalid)
        #expect(auth.authenticate(authorizationHeader: "Basic azE=") == .invalid)
        #expect(auth.authenticate(authorizationHeader: "k1") == .invalid)
        #expect(auth.authenticate(authorizationHeader: "Bearerk1") == .invalid)
        #expect(auth.authenticate(authorizationHeader: nil) == .missing)
        #expect(auth.authenticate(authorizationHeader: "") == .missing)
        #expect(auth.authenticate(authorizationHeader: "   ") == .missing)
        #expect(auth.authenticate(authorizationHeader: "Bearer") == .missing)
        #expect(auth.authenticate(authorizationHeader: "Bearer   ") == .missing)
    }

    @Test func schemeCaseAndWhitespace() throws {
        let auth = try APIKeyAuth(keys: ["k1"])
        let ok = AuthResult.ok(identity: APIKeyAuth.identity(of: "k1"))
        for h in ["bearer k1", "BEARER k1", "BeArEr k1", "Bearer  k1", "  Bearer\tk1 \t", "Bearer k1   "] {
            #expect(auth.authenticate(authorizationHeader: h) == ok, "\(h)")
        }
    }

    @Test func everyKeyIsChecked() throws {
        let auth = try APIKeyAuth(keys: ["a", "b", "c", "d"])
        for k in ["a", "b", "c", "d"] {
            #expect(auth.authenticate(authorizationHeader: "Bearer \(k)") == .ok(identity: APIKeyAuth.identity(of: k)))
        }
        #expect(auth.authenticate(authorizationHeader: "Bearer e") == .invalid)
    }

    @Test func badConfigThrowsWithoutEchoingTheKey() {
        let bad: [[String]] = [[""], [" padded"], ["sha256:abc"], ["sha256:" + String(repeating: "g", count: 64)],
                               ["sha256:" + String(repeating: "a", count: 66)]]
        for keys in bad {
            #expect(throws: ConfigError.self) { try APIKeyAuth(keys: keys) }
        }
        do {
            _ = try APIKeyAuth(keys: ["ok", "sha256:not-hex-secret"])
            Issue.record("expected a ConfigError")
        } catch {
            #expect(!"\(error)".contains("not-hex-secret"))
            #expect("\(error)".contains("#2"))
        }
        #expect(throws: Never.self) { try APIKeyAuth(keys: []) }
    }

    @Test func keysFileParsing() {
        let text = """
        # production keys
        key-one
          key-two\t
        \r
        #disabled-key
        key#with#hash\r
        sha256:\(secretOneHex)

        """
        #expect(APIKeyAuth.parseKeysFile(text) == ["key-one", "key-two", "key#with#hash", "sha256:\(secretOneHex)"])
        #expect(APIKeyAuth.parseKeysFile("") == [])
        #expect(APIKeyAuth.parseKeysFile("# nothing\n   \n") == [])
    }
}
