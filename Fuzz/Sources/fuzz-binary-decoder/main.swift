import CFuzzDriver
import FuzzTypes
import Glibc

// libFuzzer target: every input is decoded as each of the representative types in
// `decodingCases`. Never a trap, a hang or an unbounded allocation; every rejection a
// thrown `WireError` (or a synthesized enum's `DecodingError`); every accepted value
// round-trips. The process is libFuzzer's driver.

func fuzzBinaryDecoder(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = UnsafeRawBufferPointer(start: size == 0 ? nil : data, count: size)
    for decodingCase in decodingCases { decodingCase.check(bytes) }
    return 0
}

if let directory = seedDirectoryRequested {
    var seeds: [(name: String, bytes: [UInt8])] = []
    for decodingCase in decodingCases {
        do {
            for (index, bytes) in try decodingCase.seeds().enumerated() {
                seeds.append(("\(decodingCase.name)-\(index)", bytes))
            }
        } catch {
            fatalError("cannot encode the seeds of \(decodingCase.name): \(error)")
        }
    }
    // Hand-made edge cases: a count of UInt32.max elements with nothing behind it, a
    // string length varint claiming 2^60 bytes, an overlong varint, an optional tag of 2.
    seeds.append(("edge-huge-count", [0xFF, 0xFF, 0xFF, 0xFF]))
    seeds.append(("edge-huge-string", [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10]))
    seeds.append(("edge-overlong-varint", [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]))
    seeds.append(("edge-optional-tag", [2, 0, 0, 0, 0, 0, 0, 0, 0]))
    writeSeedsAndExit(seeds, to: directory)
}

var argc = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv, fuzzBinaryDecoder))
