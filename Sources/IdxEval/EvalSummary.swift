/// The numbers `idx eval` prints, as the nightly job keeps and compares them.
public struct EvalSummary: Codable, Equatable {
    public var mlmLoss: Double?
    public var seedIntra: Double
    public var seedInter: Double
    public var seedRatio: Double
    public var knnPrecision: Double
    public var knnK: Int
    public var knnQueries: Int
    public var knnLeaveOneOut: Bool
    public var documents: Int

    public init(mlmLoss: Double?, seedIntra: Double, seedInter: Double, seedRatio: Double, knnPrecision: Double,
                knnK: Int, knnQueries: Int, knnLeaveOneOut: Bool, documents: Int) {
        self.mlmLoss = mlmLoss; self.seedIntra = seedIntra; self.seedInter = seedInter; self.seedRatio = seedRatio
        self.knnPrecision = knnPrecision; self.knnK = knnK; self.knnQueries = knnQueries
        self.knnLeaveOneOut = knnLeaveOneOut; self.documents = documents
    }
}
