use pareidolia_eval::*;
use std::time::Instant;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let model = Model::load(&ModelRef::Path(args[1].clone().into())).unwrap();
    let threads: Option<usize> = args.get(3).and_then(|s| s.parse().ok());
    let b: Box<dyn Backend> = match args[2].as_str() {
        "tract" => Box::new(TractBackend),
        _ => Box::new(OrtBackend::cpu(OrtOptions {
            library: None,
            intra_threads: threads,
        })),
    };
    let t = Instant::now();
    let mut p = b.prepare(&model).unwrap();
    println!("prepare {:?}", t.elapsed());
    let img = vec![0u8; model.image_len()];
    for _ in 0..5 {
        let t = Instant::now();
        p.infer(&img, 1).unwrap();
        println!("b1 {:?}", t.elapsed());
    }
}
