// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "idx",
    products: [
        .executable(name: "idx", targets: ["idx"]),
        .executable(name: "idx-fuzz", targets: ["idx-fuzz"]),
        .library(name: "IdxCore", targets: ["IdxCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // C libraries from Debian, wrapped as system-library targets.
        .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CZstd", path: "Sources/CZstd", pkgConfig: "libzstd",
                       providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CCsv", path: "Sources/CCsv", providers: [.apt(["libcsv-dev"])]),
        // Small C helpers Swift cannot express: FTZ/DAZ, atomic directory exchange.
        .target(name: "CSupport", path: "Sources/CSupport"),
        // Open MPI through dlopen/dlsym (see docs/parallel.md): idx starts without libmpi.
        .target(name: "CMPI", path: "Sources/CMPI", linkerSettings: [.linkedLibrary("dl")]),
        // libcurl through dlopen/dlsym: only a download loads it and its ~25 libraries.
        .target(name: "CCurl", path: "Sources/CCurl", linkerSettings: [.linkedLibrary("dl")]),
        .target(
            name: "IdxCore",
            dependencies: ["COpenBLAS", "CZstd", "CCsv", "CSupport", "CMPI", "CCurl"],
            path: "Sources/IdxCore",
            // -enable-testing lets the release-mode test run use @testable import;
            // it does not slow the hot loops.
            swiftSettings: [.unsafeFlags(["-enable-testing"])]
        ),
        .executableTarget(
            name: "idx",
            dependencies: ["IdxCore", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Sources/idx"
        ),
        // libFuzzer entry points of every reader (scripts/fuzz); built plainly, a replayer.
        .executableTarget(name: "idx-fuzz", dependencies: ["IdxCore"], path: "Sources/idx-fuzz"),
        .testTarget(
            name: "IdxCoreTests",
            dependencies: ["IdxCore", "idx"],
            path: "Tests/IdxCoreTests",
            exclude: ["Fixtures"]
        ),
    ],
    swiftLanguageModes: [.v5]
)
