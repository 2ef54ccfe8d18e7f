import Foundation
import IdxBase

/// One film, one document. IMDB-Genres lists a film once per genre file (5,030 of train.csv's
/// 37,527 rows repeat a title and description), and a search that returns every copy shows the
/// same film twice. Ingest reads its inputs once first to learn every genre each film is listed
/// under (`observe`), then keeps each film's first row only, carrying all its genres (`claim`).
///
/// A film is its raw "movie title - year" and description fields (hashed: 64 bits a film;
/// memory grows with the number of distinct films, ~40 bytes each, not with their text).
struct FilmDeduplicator {
    /// Genre names in order of first appearance; a film's genres are ids into it.
    private var genreNames: [String] = []
    private var genreIds: [String: UInt32] = [:]
    /// Film → its first row's genre id; `emitted` once its document was written.
    private var first: [UInt64: UInt32] = [:]
    /// Films listed under more than one genre → their other genres, in order of appearance.
    private var more: [UInt64: [UInt32]] = [:]
    private static let emitted = UInt32.max

    static func key(title: UnsafeBufferPointer<UInt8>, description: UnsafeBufferPointer<UInt8>) -> UInt64 {
        var h = XXHash64()
        h.update(UnsafeRawBufferPointer(title))
        var separator: UInt8 = 0
        withUnsafeBytes(of: &separator) { h.update($0) }
        h.update(UnsafeRawBufferPointer(description))
        return h.finalize()
    }

    private mutating func genreId(_ genre: String) -> UInt32 {
        if let id = genreIds[genre] { return id }
        let id = UInt32(genreNames.count)
        genreNames.append(genre)
        genreIds[genre] = id
        return id
    }

    /// Pass 0: a row of film `key` listed under `genre`.
    mutating func observe(_ key: UInt64, genre: String) {
        let g = genreId(genre)
        if let f = first[key] {
            if f != g && !(more[key]?.contains(g) ?? false) { more[key, default: []].append(g) }
        } else {
            first[key] = g
        }
    }

    /// Pass 1: the genres of film `key` when this is its first row (the row's own genre first,
    /// then the others in order of appearance); nil when the film was already written.
    mutating func claim(_ key: UInt64) -> [String]? {
        guard let f = first[key], f != Self.emitted else { return nil }
        first[key] = Self.emitted
        return [genreNames[Int(f)]] + (more.removeValue(forKey: key) ?? []).map { genreNames[Int($0)] }
    }

    /// `expanded` (a comma-separated genre list) with any of `genres` it lacks appended.
    static func mergedGenreList(_ expanded: String, adding genres: [String]) -> String {
        var names = Genres.names(expanded)
        for g in genres where !g.isEmpty && !Genres.holds(names.joined(separator: ","), genre: g) { names.append(g) }
        return names.joined(separator: ", ")
    }
}
