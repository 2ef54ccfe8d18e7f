// swift-tools-version:6.0
import PackageDescription

/// The pipeline's targets in order; each depends only on targets before it.
let pipeline = ["IdxBase", "IdxParallel", "IdxCorpus", "IdxLexical", "IdxModel", "IdxTrain", "IdxStore",
                "IdxSearch", "IdxProjection", "IdxEval", "IdxNightly", "IdxFuzz"]

/// A pipeline stage in Sources/<name>. -enable-testing lets the release-mode test run use
/// @testable import (it does not slow the hot loops); -cross-module-optimization lets release
/// builds inline and specialise across the stages as they did when the pipeline was one module.
func idxTarget(_ name: String, _ dependencies: [Target.Dependency]) -> Target {
    .target(name: name, dependencies: dependencies, path: "Sources/\(name)",
            swiftSettings: [.unsafeFlags(["-enable-testing"]),
                            .unsafeFlags(["-cross-module-optimization"], .when(configuration: .release))])
}

let package = Package(
    name: "idx",
    products: [
        .executable(name: "idx", targets: ["idx"]),
        .executable(name: "idx-fuzz", targets: ["idx-fuzz"]),
        .library(name: "IdxPipeline", targets: pipeline),
        .library(name: "IdxServe", targets: ["IdxServe"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        // idx serve (IdxServe only: the core does not depend on them).
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.81.0"),
    ],
    targets: [
        // C libraries from Debian, wrapped as system-library targets.
        .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CZstd", path: "Sources/CZstd", pkgConfig: "libzstd",
                       providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CCsv", path: "Sources/CCsv", providers: [.apt(["libcsv-dev"])]),
        .systemLibrary(name: "CXXHash", path: "Sources/CXXHash", pkgConfig: "libxxhash",
                       providers: [.apt(["libxxhash-dev"])]),
        // Small C helpers Swift cannot express: FTZ/DAZ, atomic directory exchange.
        .target(name: "CSupport", path: "Sources/CSupport"),
        // Open MPI through dlopen/dlsym (see docs/parallel.md): idx starts without libmpi.
        .target(name: "CMPI", path: "Sources/CMPI", linkerSettings: [.linkedLibrary("dl")]),
        // libcurl through dlopen/dlsym: only a download loads it and its ~25 libraries.
        .target(name: "CCurl", path: "Sources/CCurl", linkerSettings: [.linkedLibrary("dl")]),
        // The pipeline, one target a stage, in order: a target depends only on targets above it
        // (README, "Architecture"). `idxTarget` adds the flags every stage shares.
        idxTarget("IdxBase", ["CSupport", "CZstd", "CXXHash"]),
        idxTarget("IdxParallel", ["IdxBase", "CMPI", "COpenBLAS"]),
        idxTarget("IdxCorpus", ["IdxBase", "CCsv", "CSupport", "CZstd"]),
        idxTarget("IdxLexical", ["IdxBase", "IdxCorpus"]),
        idxTarget("IdxModel", ["IdxBase", "IdxCorpus", "COpenBLAS", "CSupport"]),
        idxTarget("IdxTrain", ["IdxBase", "IdxParallel", "IdxCorpus", "IdxLexical", "IdxModel", "COpenBLAS", "CSupport"]),
        idxTarget("IdxStore", ["IdxBase", "IdxParallel", "IdxCorpus", "IdxLexical", "IdxModel", "COpenBLAS", "CSupport", "CZstd"]),
        idxTarget("IdxSearch", ["IdxBase", "IdxCorpus", "IdxLexical", "IdxModel", "IdxStore", "COpenBLAS", "CSupport"]),
        idxTarget("IdxProjection", ["IdxBase", "IdxCorpus", "IdxModel", "IdxStore", "COpenBLAS"]),
        idxTarget("IdxEval", ["IdxBase", "IdxCorpus", "IdxLexical", "IdxModel", "IdxStore", "IdxSearch", "COpenBLAS"]),
        idxTarget("IdxNightly", ["IdxBase", "IdxCorpus", "IdxModel", "IdxTrain", "IdxStore", "IdxProjection",
                                 "IdxEval", "CCurl", "CSupport"]),
        // libFuzzer entry points of every reader (scripts/fuzz), replayed by FuzzRegressionTests.
        idxTarget("IdxFuzz", ["IdxBase", "IdxCorpus", "IdxLexical", "IdxModel", "IdxStore", "IdxProjection", "IdxNightly"]),
        // idx serve: the JSON API and the map page on Hummingbird (docs/serve.md).
        .target(
            name: "IdxServe",
            dependencies: [
                "IdxBase", "IdxCorpus", "IdxModel", "IdxStore", "IdxSearch", "IdxProjection",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Sources/IdxServe",
            // The page's files are compiled into the binary: a request path only ever
            // selects one of them, never reaches the file system.
            resources: [
                .embedInCode("Web/index.html"), .embedInCode("Web/app.js"), .embedInCode("Web/map.js"),
                .embedInCode("Web/api.js"), .embedInCode("Web/style.css"),
            ],
            swiftSettings: [.unsafeFlags(["-enable-testing"])]
        ),
        .executableTarget(
            name: "idx",
            dependencies: pipeline.filter { $0 != "IdxFuzz" }.map { .target(name: $0) } + ["IdxServe", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Sources/idx"
        ),
        // libFuzzer's main over IdxFuzz (scripts/fuzz); built plainly, a replayer.
        .executableTarget(name: "idx-fuzz", dependencies: ["IdxFuzz"], path: "Sources/idx-fuzz"),
        .testTarget(
            name: "IdxServeTests",
            dependencies: pipeline.map { .target(name: $0) } + ["IdxServe", "idx", .product(name: "NIOPosix", package: "swift-nio")],
            path: "Tests/IdxServeTests"
        ),
        .testTarget(
            name: "IdxCoreTests",
            dependencies: pipeline.map { .target(name: $0) } + ["idx"],
            path: "Tests/IdxCoreTests",
            exclude: ["Fixtures"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
