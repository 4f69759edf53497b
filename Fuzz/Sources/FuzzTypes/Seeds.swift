import Glibc

/// Writes each seed to `directory/<name>` and exits: how the fuzz targets regenerate
/// their committed corpus (`FUZZ_WRITE_SEEDS=<directory>`, see Scripts/fuzz.sh --seeds).
public func writeSeedsAndExit(_ seeds: [(name: String, bytes: [UInt8])], to directory: String) -> Never {
    for seed in seeds {
        let path = directory + "/" + seed.name
        guard let file = fopen(path, "wb") else { fatalError("cannot create \(path)") }
        let written = seed.bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, file) }
        guard written == seed.bytes.count, fclose(file) == 0 else { fatalError("cannot write \(path)") }
    }
    print("wrote \(seeds.count) seeds to \(directory)")
    exit(0)
}

/// The seed directory asked for through the environment, if any.
public var seedDirectoryRequested: String? {
    getenv("FUZZ_WRITE_SEEDS").map { String(cString: $0) }
}
