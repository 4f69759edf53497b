// The seed's Pool example, on MPI ranks instead of local processes: the one change is the
// pool's creation (`withMPIPool` for `withProcessPool`).
//
//     mpirun --allow-run-as-root --oversubscribe --enable-recovery -np 4 \
//         MPI/.build/debug/pool-on-ranks
//
// Rank 0 runs this `main`; ranks 1-3 never reach it: the package's bootstrap catches them
// before `main` and they serve rank 0's pool until it closes.
import Glibc
import Multiprocessing
import MultiprocessingMPI

struct Square: ProcessFunction {
    func callAsFunction(_ input: Int) -> Int { input * input }
}

/// Says which rank an item ran on (each rank's local worker inherits its rank's environment).
struct WhichRank: ProcessFunction {
    func callAsFunction(_ input: Int) -> String {
        "item \(input) on rank \(getenv("OMPI_COMM_WORLD_RANK").map { String(cString: $0) } ?? "?")"
    }
}

let (squares, placements) = try await withMPIPool { pool in
    (try await pool.map(Square(), [1, 2, 3, 4, 5]), try await pool.map(WhichRank(), Array(0..<6), chunkSize: 1))
}
print(squares)  // [1, 4, 9, 16, 25]
for line in placements { print(line) }
