import Foundation
import IdxFuzz

// Built by scripts/fuzz with `-sanitize=fuzzer,address -D IDX_LIBFUZZER`: libFuzzer's main
// calls LLVMFuzzerTestOneInput with each input, for the target named by IDX_FUZZ_TARGET.
// Built plainly (as `swift build` does), it replays files instead: `idx-fuzz TARGET FILE...`.

#if IDX_LIBFUZZER
private let target: FuzzTarget = {
    let name = ProcessInfo.processInfo.environment["IDX_FUZZ_TARGET"] ?? ""
    guard let t = FuzzTarget(rawValue: name) else {
        FileHandle.standardError.write(Data("idx-fuzz: set IDX_FUZZ_TARGET to one of \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", "))\n".utf8))
        exit(2)
    }
    return t
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    target.run(size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}

@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

// SwiftPM links an executable's entry point as `<module>_main`; it hands over to libFuzzer.
@_cdecl("idx_fuzz_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var c = argc
    var v = argv
    return LLVMFuzzerRunDriver(&c, &v) { data, size in fuzzOneInput(data, size) }
}
#else
@main
enum FuzzReplay {
    static func main() {
        let args = Array(CommandLine.arguments.dropFirst())
        guard let name = args.first, let target = FuzzTarget(rawValue: name) else {
            print("usage: idx-fuzz TARGET FILE...  (targets: \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")))")
            exit(2)
        }
        for path in args.dropFirst() {
            guard let d = FileManager.default.contents(atPath: path) else { print("\(path): unreadable"); exit(1) }
            target.run([UInt8](d))
        }
        print("idx-fuzz: \(args.count - 1) input(s) of \(name) ran without a crash")
    }
}
#endif
