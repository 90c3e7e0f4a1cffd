use std::time::Instant;
fn run(
    m: usize,
    n: usize,
    k: usize,
    a_rs: usize,
    a_cs: usize,
    b_rs: usize,
    b_cs: usize,
    d_rs: usize,
    d_cs: usize,
) -> f64 {
    let a = vec![0.5f32; m * k];
    let b = vec![0.25f32; k * n];
    let mut d = vec![0.0f32; m * n];
    let reps = 200;
    let t = Instant::now();
    for _ in 0..reps {
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                d.as_mut_ptr(),
                d_cs as isize,
                d_rs as isize,
                false,
                a.as_ptr(),
                a_cs as isize,
                a_rs as isize,
                b.as_ptr(),
                b_cs as isize,
                b_rs as isize,
                0.0f32,
                1.0f32,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    }
    let s = t.elapsed().as_secs_f64() / reps as f64;
    2.0 * (m * n * k) as f64 / s / 1e9
}
fn main() {
    for (o, k, p) in [(16usize, 144usize, 1024usize), (32, 288, 256), (64, 576, 64), (128, 1152, 16)] {
        // forward as now: dst [o,p] row-major = W[o,k] (row-major) * cols[k,p] (row-major)
        let a = run(o, p, k, k, 1, p, 1, p, 1);
        // transposed view: dstT [p,o] with dst stored [o,p]: dstT(i=p, j=o) at j*p + i -> rs=1, cs=p; A = colsT (p x k): (i,kk) at kk*p+i -> rs 1, cs p; B = WT (k x o): (kk, j) at j*k + kk -> rs 1, cs k
        let b = run(p, o, k, 1, p, 1, k, 1, p);
        // dx: dcols[k,p] = WT[k,o] dy[o,p]
        let c = run(k, p, o, 1, k, p, 1, p, 1);
        // dw: dw[o,k] = dy[o,p] colsT[p,k]
        let d = run(o, k, p, p, 1, 1, p, k, 1);
        let e = run(o, k, p, p, 1, k, 1, k, 1);
        // dwT[k,o] = cols[k,p] * dyT[p,o] with dyT stored as dy [o,p]: (i=p,j=o) at j*p+i -> rs 1, cs p; dst dw[o,k]: dwT(i=k,j=o) at j*k+i
        let f = run(k, o, p, p, 1, 1, p, 1, k);
        let big = run(256, 256, 256, 256, 1, 256, 1, 256, 1);
        println!("o={o} k={k} p={p}: fwd {a:.1} GF/s, fwd transposed {b:.1}, dx {c:.1}, dw {d:.1}, dw colsT row-major {e:.1}, dwT {f:.1}; 256^3 {big:.1}");
    }
}
