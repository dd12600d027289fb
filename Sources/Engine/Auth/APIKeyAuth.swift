// APIKeyAuth: client API-key check (issue 4). An immutable value built at start-up from
// `auth.api_keys` and `auth.api_keys_file`; the frontend calls `authenticate` per request. Keys
// are held only as SHA-256 digests (plain keys are hashed here, `sha256:<hex>` entries are used
// as given), compared in constant time against every digest (fixes original bug 21). SHA-256 is
// Digest's; no I/O, no state after init.

/// Outcome of checking an `Authorization` header.
public enum AuthResult: Equatable, Sendable {
    /// A configured key matched. `identity` is the lowercase hex SHA-256 of the key, safe for logs,
    /// metrics and cache partitions (the key itself is never kept).
    case ok(identity: String)
    /// No header, a blank one, or `Bearer` with no credential.
    case missing
    /// A credential was presented (or another scheme used) and matches no key.
    case invalid
}

public struct APIKeyAuth: Sendable {
    /// Configured digests, 32 bytes each, back to back.
    private let digests: [UInt8]

    public var keyCount: Int { digests.count / 32 }

    /// `keys`: plain keys, or `sha256:<64 hex digits>` (either case). Empty keys, blank-padded
    /// keys and malformed digests are config errors; the message never echoes the key.
    public init(keys: [String]) throws(ConfigError) {
        var d: [UInt8] = []
        d.reserveCapacity(keys.count * 32)
        for (i, key) in keys.enumerated() {
            let configKey = "auth.api_keys"
            if key.isEmpty {
                throw .invalid(key: configKey, message: "key #\(i + 1) is empty")
            }
            if key.utf8.first.map(Self.isBlank) == true || key.utf8.last.map(Self.isBlank) == true {
                throw .invalid(key: configKey, message: "key #\(i + 1) has leading or trailing whitespace")
            }
            if key.hasPrefix("sha256:") {
                guard let digest = Self.decodeHex(key.utf8.dropFirst(7)) else {
                    throw .invalid(key: configKey, message: "key #\(i + 1): 'sha256:' must be followed by 64 hex digits")
                }
                d += digest
            } else {
                d += Self.sha256(key)
            }
        }
        digests = d
    }

    /// Checks `Authorization: Bearer <key>`: the scheme in any case, blanks (spaces, tabs) around
    /// and between tolerated. Hashes the presented key and compares it with every configured
    /// digest without exiting early, so timing reveals neither the match nor its position.
    public func authenticate(authorizationHeader: String?) -> AuthResult {
        guard let header = authorizationHeader else { return .missing }
        let bytes = Array(header.utf8)
        var lo = 0
        var hi = bytes.count
        while lo < hi && Self.isBlank(bytes[lo]) { lo += 1 }
        while hi > lo && Self.isBlank(bytes[hi - 1]) { hi -= 1 }
        guard lo < hi else { return .missing }
        var schemeEnd = lo
        while schemeEnd < hi && !Self.isBlank(bytes[schemeEnd]) { schemeEnd += 1 }
        guard Self.isBearer(bytes[lo..<schemeEnd]) else { return .invalid }
        var credStart = schemeEnd
        while credStart < hi && Self.isBlank(bytes[credStart]) { credStart += 1 }
        guard credStart < hi else { return .missing }

        let presented = Self.sha256(bytes[credStart..<hi])
        var found: UInt8 = 0
        var k = 0
        while k < digests.count {
            var diff: UInt8 = 0
            for j in 0..<32 { diff |= digests[k + j] ^ presented[j] }
            // 1 when diff == 0, else 0, without a branch: (0 - 1) >> 8 has bit 0 set only for 0.
            found |= UInt8(truncatingIfNeeded: (UInt16(diff) &- 1) >> 8) & 1
            k += 32
        }
        return found == 1 ? .ok(identity: Self.hex(presented)) : .invalid
    }

    /// Parses an `auth.api_keys_file`: one key per line, blanks around a key trimmed, empty lines
    /// and lines starting with `#` skipped (a `#` later in a line is part of the key), CRLF ok.
    public static func parseKeysFile(_ text: String) -> [String] {
        var keys: [String] = []
        for line in text.split(omittingEmptySubsequences: true, whereSeparator: { $0 == "\n" || $0 == "\r\n" || $0 == "\r" }) {
            let u = Array(line.utf8)
            var lo = 0
            var hi = u.count
            while lo < hi && isBlank(u[lo]) { lo += 1 }
            while hi > lo && isBlank(u[hi - 1]) { hi -= 1 }
            guard lo < hi, u[lo] != UInt8(ascii: "#") else { continue }
            keys.append(String(decoding: u[lo..<hi], as: UTF8.self))
        }
        return keys
    }

    /// Lowercase hex SHA-256 of `key`, i.e. its identity and its `sha256:` config form.
    public static func identity(of key: String) -> String { hex(sha256(key)) }

    /// The identity a configured entry (plain, or `sha256:<hex>`) authenticates as.
    public static func configuredIdentity(_ entry: String) -> String {
        entry.hasPrefix("sha256:") ? String(entry.dropFirst(7)).lowercased() : identity(of: entry)
    }

    // MARK: - Internals

    @inline(__always) static func isBlank(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 }

    private static func isBearer(_ s: ArraySlice<UInt8>) -> Bool {
        let word = Array("bearer".utf8)
        guard s.count == word.count else { return false }
        for (b, w) in zip(s, word) where (b | 0x20) != w { return false }
        return true
    }

    static func sha256(_ s: String) -> [UInt8] { sha256(Array(s.utf8)[...]) }

    static func sha256(_ bytes: ArraySlice<UInt8>) -> [UInt8] { Digest.sha256(bytes) }

    static func hex(_ bytes: [UInt8]) -> String { Digest.hex(bytes) }

    private static func decodeHex(_ s: Substring.UTF8View) -> [UInt8]? {
        guard s.count == 64 else { return nil }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        var out: [UInt8] = []
        out.reserveCapacity(32)
        var it = s.makeIterator()
        while let h = it.next(), let l = it.next() {
            guard let a = nibble(h), let b = nibble(l) else { return nil }
            out.append(a << 4 | b)
        }
        return out.count == 32 ? out : nil
    }
}
