import IdxBase
import IdxCorpus

extension EncoderModel {
    /// Refuses a corpus holding ids the model has no embedding for (a corpus of another
    /// vocabulary, or damaged): the forward pass would read past its table.
    public func checkVocabulary(_ corpus: TokenizedCorpus, source: String) throws {
        var bad: Int32?
        for id in corpus.tokens where id < 0 || Int(id) >= config.vocabSize { bad = id; break }
        if let bad {
            throw IdxError("\(source): token id \(bad) is outside the vocabulary of \(directory) (\(config.vocabSize) entries); use the corpus the model was made for, or re-ingest it with `idx ingest --tokenizer \(directory)/tokenizer.json`.")
        }
    }
}
