// OpenAddressing: the rule that backward-shift deletion in a linear-probing table rests on, shared
// by the tables that use it (PrefixIndex, ChainCounts). Pure: no imports, no I/O.

enum OpenAddressing {
    /// During a deletion's shift: whether the entry at `j`, whose home bucket is `home`, must stay
    /// where it is rather than move into the `hole` — its home lies cyclically in (hole, j], so
    /// moving it before its home would hide it from lookups.
    @inline(__always)
    static func staysInPlace(home: Int, hole: Int, at j: Int) -> Bool {
        hole <= j ? (hole < home && home <= j) : (hole < home || home <= j)
    }
}
