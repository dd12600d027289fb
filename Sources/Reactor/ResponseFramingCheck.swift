// ResponseFramingCheck: the framing rules strict http-parser enforces and Debian's libhttp-parser
// (built with HTTP_PARSER_STRICT=0, like upstream's `make library`) skips, checked on the bytes of
// an upstream response that are not body: the status line starts with "HTTP/", every CR is
// followed by LF, and a chunk's data is followed by CRLF. HTTPClientConnection feeds it; pure.
// Public only for the fuzz target (Sources/fuzz-engine), which also runs it over raw input.
// Pure: no I/O (libc's memchr for the scan between CRs).
#if canImport(Glibc)
import Glibc
#endif

/// Fed, in order, every byte of one response that http-parser consumed and did not hand out as
/// body (status line, header lines, chunk-size lines, chunk terminators, trailers).
public struct ResponseFramingCheck {
    /// Bytes of "HTTP/" matched at the start of the current message.
    private var prefixMatched = 0
    /// The last framing byte was CR: the next must be LF.
    private var afterCR = false
    /// A chunk's data just ended: the next framing byte must be CR (then LF).
    private var chunkDataEnded = false

    private static let prefix: (UInt8, UInt8, UInt8, UInt8, UInt8) = (0x48, 0x54, 0x54, 0x50, 0x2F) // HTTP/
    private static let cr: UInt8 = 13
    private static let lf: UInt8 = 10

    public init() {}

    /// A new response (the first of an exchange, or the one after an interim 1xx) starts here.
    public mutating func startMessage() {
        prefixMatched = 0
        afterCR = false
        chunkDataEnded = false
    }

    /// The body bytes just handed out completed a chunk.
    public mutating func chunkEnded() { chunkDataEnded = true }

    /// False at the first byte that breaks a rule (the response is malformed).
    public mutating func accept(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard let base = bytes.baseAddress else { return true }
        var i = 0
        while i < bytes.count {
            if prefixMatched == 5 && !afterCR && !chunkDataEnded {
                // Inside header lines only a CR matters: jump to the next one.
                guard let p = memchr(base + i, Int32(Self.cr), bytes.count - i) else { return true }
                let next = base.distance(to: UnsafeRawPointer(p)) + 1
                if next < bytes.count {
                    // Its LF, checked here when it is in these bytes (one pass of the loop a line
                    // instead of two).
                    guard bytes[next] == Self.lf else { return false }
                    i = next + 1
                } else {
                    afterCR = true
                    i = next
                }
                continue
            }
            let b = bytes[i]
            i += 1
            if prefixMatched < 5 {
                let want = withUnsafeBytes(of: Self.prefix) { $0[prefixMatched] }
                guard b == want else { return false }
                prefixMatched += 1
            } else if afterCR {
                guard b == Self.lf else { return false }
                afterCR = false
            } else if chunkDataEnded {
                guard b == Self.cr else { return false }
                chunkDataEnded = false
                afterCR = true
            } else if b == Self.cr {
                afterCR = true
            }
        }
        return true
    }
}
