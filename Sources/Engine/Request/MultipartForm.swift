// MultipartForm: the plain fields of a multipart/form-data body (RFC 7578), as far as routing a
// relayed audio request needs them: `model` and `stream`. The body is relayed as it came; this
// only reads it. Parts are delimited by CRLF "--" boundary; a part's headers end at an empty
// line; its name is the `name` parameter of its Content-Disposition. File parts are skipped.
// Anything malformed reads as "no such field" (vLLM judges the body).
// Pure: no imports, no I/O.

enum MultipartForm {
    /// The boundary of a `multipart/form-data; boundary=...` content type (quoted or not).
    static func boundary(contentType: String) -> [UInt8]? {
        let parts = contentType.split(separator: ";").map { $0.trimmingCharacters(in: " \t") }
        guard let first = parts.first, first.lowercased() == "multipart/form-data" else { return nil }
        for p in parts.dropFirst() {
            guard let eq = p.firstIndex(of: "="), p[..<eq].lowercased() == "boundary" else { continue }
            var v = Substring(p[p.index(after: eq)...])
            if v.count >= 2, v.first == "\"", v.last == "\"" { v = v.dropFirst().dropLast() }
            let b = Array(v.utf8)
            return b.isEmpty || b.count > 70 ? nil : b
        }
        return nil
    }

    /// The value of the plain field `name` (at most `maxBytes`, UTF-8), or nil.
    static func field(_ name: String, in body: [UInt8], boundary: [UInt8], maxBytes: Int = 256) -> String? {
        let delimiter = Array("--".utf8) + boundary
        let next = Array("\r\n".utf8) + delimiter
        // The first delimiter opens the body (a preamble before it is allowed).
        guard var at = find(delimiter, in: body, from: 0) else { return nil }
        at += delimiter.count
        while at + 2 <= body.count, !(body[at] == 45 && body[at + 1] == 45) { // "--" closes the body
            guard body[at] == 13, body[at + 1] == 10 else { return nil }
            let headersStart = at + 2
            guard let headersEnd = find(Array("\r\n\r\n".utf8), in: body, from: headersStart),
                  let end = find(next, in: body, from: headersEnd + 4) else { return nil }
            let headers = String(decoding: body[headersStart..<headersEnd], as: UTF8.self)
            if let (partName, isFile) = disposition(headers), partName == name, !isFile {
                let value = body[(headersEnd + 4)..<end]
                return value.count <= maxBytes ? String(decoding: value, as: UTF8.self) : nil
            }
            at = end + next.count
        }
        return nil
    }

    /// The `name` of a part's Content-Disposition, and whether it is a file.
    private static func disposition(_ headers: String) -> (String, Bool)? {
        for line in headers.split(separator: "\r\n") {
            guard let colon = line.firstIndex(of: ":"),
                  line[..<colon].trimmingCharacters(in: " \t").lowercased() == "content-disposition" else { continue }
            var name: String?
            var isFile = false
            for param in line[line.index(after: colon)...].split(separator: ";").dropFirst() {
                let p = param.trimmingCharacters(in: " \t")
                guard let eq = p.firstIndex(of: "=") else { continue }
                let key = p[..<eq].lowercased()
                var v = Substring(p[p.index(after: eq)...])
                if v.count >= 2, v.first == "\"", v.last == "\"" { v = v.dropFirst().dropLast() }
                if key == "name" { name = String(v) }
                if key == "filename" || key == "filename*" { isFile = true }
            }
            return name.map { ($0, isFile) }
        }
        return nil
    }

    private static func find(_ needle: [UInt8], in hay: [UInt8], from: Int) -> Int? {
        guard !needle.isEmpty, hay.count >= needle.count else { return nil }
        var i = from
        let last = hay.count - needle.count
        while i <= last {
            if hay[i] == needle[0] {
                var j = 1
                while j < needle.count && hay[i + j] == needle[j] { j += 1 }
                if j == needle.count { return i }
            }
            i += 1
        }
        return nil
    }
}

private extension StringProtocol {
    func trimmingCharacters(in set: String) -> String {
        let chars = Set(set)
        var s = Substring(self)
        while let f = s.first, chars.contains(f) { s = s.dropFirst() }
        while let l = s.last, chars.contains(l) { s = s.dropLast() }
        return String(s)
    }
}
