// ProcessStats+Read: reads this process's figures from /proc (Linux) for a scrape. A few small
// file reads and one directory listing per scrape, on the loop; never on the data path.
// Each worker reads its own /proc/self: the figures describe the process that answers the scrape,
// like every other series on the page (docs/operations.md, "Scraping a fleet").

#if canImport(Glibc)
import Glibc
#endif

extension ProcessStats {
    /// This process now; nil when /proc cannot be read (not Linux, or /proc not mounted).
    static func readSelf() -> ProcessStats? {
        guard let statText = readTextFile("/proc/self/stat"), let stat = parseStat(statText),
              let procStat = readTextFile("/proc/stat"), let boot = parseBootTime(procStat)
        else { return nil }
        var limit = rlimit()
        // RLIM_INFINITY is all ones (Swift does not import the macro's -1 into rlim_t).
        let maxFDs: Int? = getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 && limit.rlim_cur != rlim_t.max
            ? Int(clamping: limit.rlim_cur) : nil
        return ProcessStats(stat: stat, bootTime: boot, ticksPerSecond: sysconf(Int32(_SC_CLK_TCK)),
                            pageSize: sysconf(Int32(_SC_PAGESIZE)), openFDs: countOpenFDs(), maxFDs: maxFDs)
    }

    /// Entries of /proc/self/fd, not counting `.`, `..` and the descriptor this listing opened.
    private static func countOpenFDs() -> Int? {
        guard let dir = opendir("/proc/self/fd") else { return nil }
        defer { closedir(dir) }
        var n = 0
        while let e = readdir(dir) {
            let isDot = withUnsafeBytes(of: e.pointee.d_name) { $0[0] == 0x2E }
            if !isDot { n += 1 }
        }
        return max(n - 1, 0)
    }
}
