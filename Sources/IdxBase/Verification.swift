/// When a stored file's parts are checked (checksums and invariants) before use.
public enum Verification: Sendable {
    /// Everything when the file is opened: building, publishing, fuzzing, and whatever reads it all.
    case atOpen
    /// What every query reads, when the file is opened; the parts a query may never read (a
    /// metadata chunk, a term's postings) when first read: a search reads a few of them.
    case onFirstRead
}
