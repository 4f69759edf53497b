import CFuzzDriver
import FuzzTypes
import Glibc
@_spi(Fuzzing) import Multiprocessing

// libFuzzer target: every input is the raw byte stream of a connection (headers and
// payloads as the peer would write them), fed to the real receiving code whole and in
// 3-byte pieces, then closed. What each receive returns must match `expectedOutcomes`, the
// framing rules restated; every rejection must be a thrown error. The header parser is
// also run on its own. The process is libFuzzer's driver.

func fuzzFrame(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = UnsafeRawBufferPointer(start: size == 0 ? nil : data, count: size)
    do {
        _ = try WireFuzzing.parseFrameHeader(bytes)
    } catch {
        // A typed throw: always a WireError.
    }
    // A small limit reaches the oversized path; the default one lets a header claim up to
    // 256 MiB, which must cost no more than the reader's initial allocation.
    let runs = [
        (pieceSize: max(size, 1), limit: frameTargetMessageLimit), (pieceSize: 3, limit: frameTargetMessageLimit),
        (pieceSize: max(size, 1), limit: defaultMaximumMessageSize),
    ]
    for (pieceSize, limit) in runs {
        let expected = expectedOutcomes(of: Array(bytes), maximumMessageSize: limit)
        let results: [Result<[UInt8], any Error>]
        do {
            results = try WireFuzzing.receiveFrames(fromStream: bytes, pieceSize: pieceSize, maximumMessageSize: limit)
        } catch {
            fatalError("the socket pair failed: \(error)")
        }
        let outcomes = results.map(FrameOutcome.init)
        guard outcomes == expected else {
            fatalError("pieces of \(pieceSize) bytes, limit \(limit): received \(outcomes), expected \(expected)")
        }
    }
    return 0
}

if let directory = seedDirectoryRequested {
    var seeds: [(name: String, bytes: [UInt8])] = []
    // Real messages: encodings of the decoder target's values, one and several per stream.
    var payloads: [[UInt8]] = []
    for decodingCase in decodingCases {
        guard let first = try? decodingCase.seeds().first, first.count <= 512 else { continue }
        payloads.append(first)
    }
    seeds.append(("empty-message", framed([[]])))
    seeds.append(("one-message", framed([payloads[0]])))
    seeds.append(("several-messages", framed(payloads)))
    seeds.append(("with-descriptor-count", framed([[1, 2, 3]], descriptorCount: 1) + framed([[4]])))
    let big = [UInt8](repeating: 0xAB, count: frameTargetMessageLimit + 1)
    seeds.append(("oversized-then-small", framed([big, [7, 7]])))
    seeds.append(("oversized-cut-short", Array(framed([big]).prefix(100))))
    seeds.append(("huge-length", WireFuzzing.frameHeader(length: Int(UInt32.max), descriptorCount: 0) + [1, 2]))
    seeds.append(("bad-magic", [0x58, 0x58, 1, 0, 0, 0, 0, 0]))
    seeds.append(("bad-version", [0x4D, 0x50, 2, 0, 0, 0, 0, 0]))
    seeds.append(("header-cut-short", Array(framed([[9]]).prefix(5))))
    seeds.append(("payload-cut-short", Array(framed([[1, 2, 3, 4]]).dropLast(2))))
    writeSeedsAndExit(seeds, to: directory)
}

var argc = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv, fuzzFrame))
