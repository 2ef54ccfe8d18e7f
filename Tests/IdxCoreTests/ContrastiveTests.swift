import XCTest
import IdxCorpus
@testable import IdxTrain
@testable import IdxModel

/// Contrastive fine-tuning: the InfoNCE gradient, the gradient through the whole encoder
/// (finite differences), views as pure functions of (seed, step, slot), bit-exact resume.
final class ContrastiveTests: XCTestCase {
    func contrastiveOptions(steps: Int = 6, contrastiveSteps: Int = 3, temperature: Float = 0.5, pairs: ContrastivePairs = .halves) -> TrainOptions {
        var o = TinyTraining.options(steps: steps)
        var c = ContrastiveOptions()
        c.steps = contrastiveSteps; c.batchSize = 4; c.lr = 1e-3; c.temperature = temperature; c.pairs = pairs
        o.contrastive = c
        return o
    }

    func testInfoNCEGradientMatchesFiniteDifferences() {
        let b = 3, c = 5
        var g = SplitMix64(state: 3)
        var z = (0 ..< 2 * b * c).map { _ in Float(g.nextDouble() * 2 - 1) }
        var dz = [Float](repeating: 0, count: z.count), scratch = dz
        let loss = ContrastiveLoss.forwardBackward(z, &dz, pairs: b, dim: c, temperature: 0.2)
        XCTAssertGreaterThan(loss, 0)
        let eps: Float = 1e-3
        for i in 0 ..< z.count {
            let x = z[i]
            z[i] = x + eps; let up = ContrastiveLoss.forwardBackward(z, &scratch, pairs: b, dim: c, temperature: 0.2)
            z[i] = x - eps; let down = ContrastiveLoss.forwardBackward(z, &scratch, pairs: b, dim: c, temperature: 0.2)
            z[i] = x
            XCTAssertEqual(Double(dz[i]), (up - down) / Double(2 * eps), accuracy: 2e-3, "z[\(i)]")
        }
        // Identical views of well-separated documents: the loss is near its floor 0.
        var same = [Float](repeating: 0, count: 2 * b * c)
        for i in 0 ..< b { same[i * c + i] = 1; same[(b + i) * c + i] = 1 }
        XCTAssertLessThan(ContrastiveLoss.forwardBackward(same, &scratch, pairs: b, dim: c, temperature: 0.05), 1e-6)
    }

    func testEncoderGradientOfTheContrastiveLossMatchesFiniteDifferences() throws {
        var cfg = TinyTraining.config
        cfg.dropout = 0 // a deterministic loss to differentiate
        // Both kinds of views; halves of the tiny corpus's documents are a few tokens long, where
        // the loss bends faster, so they take a smaller step.
        for (pairs, eps) in [(ContrastivePairs.`self`, Float(1e-2)), (.halves, Float(2e-3)), (.span, Float(2e-3))] {
            try checkEncoderGradient(cfg, pairs: pairs, eps: eps)
        }
    }

    func checkEncoderGradient(_ cfg: ModelConfig, pairs: ContrastivePairs, eps: Float) throws {
        let t = try Trainer(config: cfg, options: contrastiveOptions(pairs: pairs), corpus: TinyTraining.corpus(), tokenizerHash: "00000000000000aa")
        _ = try t.computeContrastiveGradients(step: 5)
        let grads = Array(t.gradients)
        // The largest gradients of each kind of tensor (embeddings, attention, FFN, norms).
        let layout = t.net.layout
        var picks: [Int] = []
        for slot in layout.slots where !slot.name.hasPrefix("lm_head") {
            let range = slot.offset ..< slot.offset + slot.count
            if let best = range.max(by: { abs(grads[$0]) < abs(grads[$1]) }), abs(grads[best]) > 1e-4 { picks.append(best) }
        }
        XCTAssertGreaterThan(picks.count, 10)
        for p in picks {
            let x = t.parameters[p]
            t.parameters[p] = x + eps; let up = try t.computeContrastiveGradients(step: 5).loss
            t.parameters[p] = x - eps; let down = try t.computeContrastiveGradients(step: 5).loss
            t.parameters[p] = x
            let fd = (up - down) / Double(2 * eps)
            XCTAssertEqual(Double(grads[p]), fd, accuracy: 0.03 * abs(fd) + 1e-4, "\(pairs): parameter \(p)")
        }
        // The LM head plays no part.
        XCTAssertTrue(grads[layout.lmHeadW ..< layout.lmHeadB + cfg.vocabSize].allSatisfy { $0 == 0 })
    }

    func testViewsArePureFunctionsAndCropTheDocument() throws {
        let a = try TinyTraining.trainer(contrastiveOptions(pairs: .`self`)), b = try TinyTraining.trainer(contrastiveOptions(pairs: .`self`))
        _ = try a.trainStep(); _ = try a.contrastiveStep() // history must not matter
        for (step, slot) in [(4, 0), (5, 3), (900, 1)] {
            for view in 0 ..< 2 {
                let v = a.contrastiveView(step: step, slot: slot, view: view)
                XCTAssertEqual(v, b.contrastiveView(step: step, slot: slot, view: view))
                XCTAssertEqual(v.first, SpecialToken.bos)
                let doc = Array(a.corpus.document(a.document(step: step, slot: slot)))
                let words = v.dropFirst().filter { $0 != SpecialToken.eos }
                XCTAssertLessThanOrEqual(words.count, doc.count)
                XCTAssertTrue(words.allSatisfy(doc.contains)) // words of the document only, in its order
            }
        }
        XCTAssertNotEqual(a.contrastiveView(step: 4, slot: 0, view: 0), a.contrastiveView(step: 4, slot: 0, view: 1))
    }

    /// The default pairs: a span of the document and the tokens around it, which share no
    /// position and together make the whole document.
    /// Inverse-cloze pairs: 2-8 tokens (at most a third of the document) against the rest of
    /// it, the span left in the context about one time in ten; `mixed` uses them for odd slots
    /// and halves for even ones.
    func testSpanPairsAreShortSpansAgainstTheRest() throws {
        let t = try TinyTraining.trainer(contrastiveOptions(pairs: .span))
        let mixed = try TinyTraining.trainer(contrastiveOptions(pairs: .mixed))
        let halves = try TinyTraining.trainer(contrastiveOptions(pairs: .halves))
        var kept = 0, pairs = 0
        for step in 1 ... 200 {
            for slot in 0 ..< 4 {
                let doc = Array(t.corpus.document(t.document(step: step, slot: slot)))
                guard doc.count >= 3, doc.count <= t.options.maxLen - 2 else { continue }
                let inner = { (v: [Int32]) -> [Int32] in Array(v.dropFirst().dropLast()) }
                let span = inner(t.contrastiveView(step: step, slot: slot, view: 0))
                let context = inner(t.contrastiveView(step: step, slot: slot, view: 1))
                XCTAssertTrue((1 ... 8).contains(span.count))
                XCTAssertLessThanOrEqual(span.count, max(1, doc.count / 3))
                if doc.count >= 6 { XCTAssertGreaterThanOrEqual(span.count, 2) }
                let starts = (0 ... doc.count - span.count).filter { Array(doc[$0 ..< $0 + span.count]) == span }
                XCTAssertFalse(starts.isEmpty, "the span is a run of the document")
                if context == doc { kept += 1 } else {
                    XCTAssertTrue(starts.contains { Array(doc[..<$0] + doc[($0 + span.count)...]) == context })
                }
                pairs += 1
                let m = inner(mixed.contrastiveView(step: step, slot: slot, view: 0))
                if slot % 2 == 1 { XCTAssertEqual(m, span) } else {
                    XCTAssertEqual(m, inner(halves.contrastiveView(step: step, slot: slot, view: 0)))
                }
            }
        }
        XCTAssertGreaterThan(pairs, 100)
        XCTAssertTrue((1 ... pairs / 4).contains(kept), "context kept the span \(kept) of \(pairs) times")
    }

    /// content-span: a span that is at least half content words is `span`'s own; one that is
    /// not is drawn again, so that far more spans name something, and every span is still a run
    /// of the document with the context its rest (or the whole document).
    func testContentSpanDrawsAgainSpansOfFunctionWords() throws {
        // 60 documents of 10 tokens (whole in a view at --max-len 12): function words 5-9
        // everywhere, and two words no other document holds (idf 3.4) side by side at a random place.
        var g = SplitMix64(state: 3)
        var corpus = TokenizedCorpus()
        for i in 0 ..< 60 {
            var doc = (0 ..< 10).map { _ in Int32(5 + g.next() % 5) }
            let at = Int(g.next() % 9)
            doc[at] = Int32(10 + 2 * i); doc[at + 1] = Int32(11 + 2 * i)
            corpus.append(doc)
        }
        let config = ModelConfig(vocabSize: 140, dModel: 16, nHeads: 2, nLayers: 1, dFF: 32, maxLen: 16, dropout: 0.1)
        let make = { (pairs: ContrastivePairs) in
            try Trainer(config: config, options: self.contrastiveOptions(pairs: pairs), corpus: corpus, tokenizerHash: "00000000000000aa")
        }
        let t = try make(.contentSpan), span = try make(.span)
        let inner = { (v: [Int32]) -> [Int32] in Array(v.dropFirst().dropLast()) }
        let namesSomething = { (v: [Int32]) in 2 * v.filter { $0 >= 10 }.count >= v.count }
        var named = 0, namedBySpan = 0, pairs = 0
        for step in 1 ... 100 {
            for slot in 0 ..< 4 {
                let doc = Array(t.corpus.document(t.document(step: step, slot: slot)))
                let views = (0 ..< 2).map { inner(t.contrastiveView(step: step, slot: slot, view: $0)) }
                let spanViews = (0 ..< 2).map { inner(span.contrastiveView(step: step, slot: slot, view: $0)) }
                let starts = (0 ... doc.count - views[0].count).filter { Array(doc[$0 ..< $0 + views[0].count]) == views[0] }
                XCTAssertFalse(starts.isEmpty, "the span is a run of the document")
                XCTAssertTrue(views[1] == doc || starts.contains { Array(doc[..<$0] + doc[($0 + views[0].count)...]) == views[1] })
                if namesSomething(spanViews[0]) { XCTAssertEqual(views, spanViews, "a span that names something is kept") }
                named += namesSomething(views[0]) ? 1 : 0
                namedBySpan += namesSomething(spanViews[0]) ? 1 : 0
                pairs += 1
            }
        }
        XCTAssertGreaterThan(namedBySpan, 0)
        XCTAssertGreaterThan(Double(named), 1.8 * Double(namedBySpan), "content words in \(named) spans of \(pairs) against \(namedBySpan)")
    }

    /// span-neighbours: even slots as `span`; an odd slot's two views come from one of the BM25
    /// neighbours of the document before it (the batch's hard negatives).
    func testSpanNeighboursPutALookAlikeInEveryOddSlot() throws {
        let t = try TinyTraining.trainer(contrastiveOptions(pairs: .spanNeighbours))
        let span = try TinyTraining.trainer(contrastiveOptions(pairs: .span))
        let n = t.corpus.count
        t.lexicalNeighbours = (0 ..< n).map { [Int32(($0 + 1) % n), Int32(($0 + 2) % n)] }
        var odd = 0
        for step in 1 ... 50 {
            for slot in 0 ..< 4 {
                let views = (0 ..< 2).map { t.contrastiveView(step: step, slot: slot, view: $0) }
                if slot % 2 == 0 {
                    XCTAssertEqual(views, (0 ..< 2).map { span.contrastiveView(step: step, slot: slot, view: $0) })
                    continue
                }
                let before = t.document(step: step, slot: slot - 1)
                let candidates = [(before + 1) % n, (before + 2) % n].map { Array(t.corpus.document($0)) }
                let words = views.map { Array($0.dropFirst().filter { $0 != SpecialToken.eos }) }
                XCTAssertTrue(candidates.contains { doc in words.allSatisfy { $0.allSatisfy(doc.contains) } }, "step \(step) slot \(slot)")
                odd += 1
            }
        }
        XCTAssertEqual(odd, 100)
    }

    func testHalvesAreDisjointAndMakeTheWholeDocument() throws {
        let t = try TinyTraining.trainer(contrastiveOptions())
        var spans = Set<Int>()
        for step in 1 ... 40 {
            for slot in 0 ..< 4 {
                let doc = Array(t.corpus.document(t.document(step: step, slot: slot)))
                guard doc.count >= 2, doc.count <= t.options.maxLen - 2 else { continue }
                let inner = { (v: [Int32]) -> [Int32] in
                    XCTAssertEqual(v.first, SpecialToken.bos); XCTAssertEqual(v.last, SpecialToken.eos)
                    return Array(v.dropFirst().dropLast())
                }
                let span = inner(t.contrastiveView(step: step, slot: slot, view: 0))
                let rest = inner(t.contrastiveView(step: step, slot: slot, view: 1))
                XCTAssertFalse(span.isEmpty); XCTAssertFalse(rest.isEmpty)
                XCTAssertEqual(span.count + rest.count, doc.count)
                let share = Double(span.count) / Double(doc.count)
                if doc.count >= 10 { XCTAssertTrue((0.3 ... 0.7).contains(share), "span share \(share)") }
                // The span sits somewhere in the document, and the rest is what lies around it.
                let starts = (0 ... doc.count - span.count).filter { Array(doc[$0 ..< $0 + span.count]) == span }
                XCTAssertTrue(starts.contains { Array(doc[..<$0] + doc[($0 + span.count)...]) == rest }, "step \(step) slot \(slot)")
                spans.insert(starts.first ?? -1)
            }
        }
        XCTAssertGreaterThan(spans.count, 3) // the span moves
        XCTAssertEqual(ContrastiveOptions().pairs, .span)
    }

    /// MLM steps 1-3, contrastive 4-6; killed after step 4 and resumed: bit for bit the same.
    func testPhasesAndResumeAreBitExact() throws {
        let dir = NSTemporaryDirectory() + "idx-contrastive-\(getpid())-\(UInt32.random(in: 0 ... .max))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let o = contrastiveOptions()
        let straight = try TinyTraining.trainer(o)
        XCTAssertEqual((1 ... 6).map { straight.isContrastive(step: $0) }, [false, false, false, true, true, true])
        var expected = [Double]()
        for s in 1 ... 6 {
            expected.append(straight.isContrastive(step: s) ? try straight.contrastiveStep().loss : try straight.trainStep().loss)
            if s == 4 {
                try straight.writeCheckpoint(directory: dir, tokenizerJSON: Data("{}".utf8), corpusPath: "c", log: TrainLog.header, elapsed: 0)
            }
        }
        let (resumed, _, _) = try Trainer.resume(directory: dir, corpus: TinyTraining.corpus(), tokenizerHash: "00000000000000aa", corpusPath: "c")
        XCTAssertEqual(resumed.options.contrastive, o.contrastive)
        var got = [Double]()
        for _ in 5 ... 6 { got.append(try resumed.contrastiveStep().loss) }
        XCTAssertEqual(got, Array(expected[4...]))
        XCTAssertEqual(Array(resumed.parameters), Array(straight.parameters))
    }

    func testBadContrastiveOptionsAreRejected() {
        var o = contrastiveOptions()
        o.contrastive!.steps = 7 // more than --steps
        XCTAssertThrowsError(try TinyTraining.trainer(o))
        o = contrastiveOptions()
        o.contrastive!.batchSize = 1
        XCTAssertThrowsError(try TinyTraining.trainer(o))
    }
}
