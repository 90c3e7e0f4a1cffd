//! Writes sample report/curve PNGs for visual inspection: `cargo run --example eval_pngs -- DIR`.
fn main() -> anyhow::Result<()> {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| ".".into()));
    let c = 10;
    let n = 1000;
    let labels: Vec<usize> = (0..n).map(|i| i % c).collect();
    let mut scores = vec![0.0f32; n * c];
    for i in 0..n {
        let p = if i % 7 == 0 { (labels[i] + 1 + i % 3) % c } else { labels[i] };
        scores[i * c + p] = 1.0;
    }
    let s = byol::scores::ClassScores::new(n, c, scores)?;
    let names: Vec<String> = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
        .map(String::from)
        .to_vec();
    let rep = byol::report::EvalReport::from_scores("knn", &s, &labels, &names, serde_json::json!({"k": 200}))?;
    rep.write_confusion_png(&dir.join("confusion10.png"))?;
    let series = vec![
        ("loss".to_string(), (0..200).map(|i| (i as f64, 4.0 / (1.0 + 0.05 * i as f64))).collect()),
        (
            "lr".to_string(),
            (0..200).map(|i| (i as f64, 0.2 * 0.5 * (1.0 + (std::f64::consts::PI * i as f64 / 199.0).cos()))).collect(),
        ),
        (
            "tau".to_string(),
            (0..200)
                .map(|i| (i as f64, 1.0 - 0.004 * 0.5 * (1.0 + (std::f64::consts::PI * i as f64 / 199.0).cos())))
                .collect(),
        ),
        ("knn top-1".to_string(), (0..10).map(|i| (i as f64 * 20.0, 0.1 + 0.08 * i as f64)).collect()),
    ];
    byol::plots::plot_curves(&dir.join("curves.png"), "BYOL pretrain (synthetic)", "step", &series)?;
    Ok(())
}
