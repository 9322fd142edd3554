//! Prints sqlparser's tokens of a file, for reading a fuzz case:
//! `cargo run -p fleetmig-parse --example tokens -- FILE [mysql|postgres]`.
fn main() {
    let mut args = std::env::args().skip(1);
    let file = args.next().expect("a file");
    let sql = String::from_utf8(std::fs::read(file).unwrap()).unwrap();
    let d: Box<dyn sqlparser::dialect::Dialect> = match args.next().as_deref() {
        Some("mysql") => Box::new(sqlparser::dialect::MySqlDialect {}),
        _ => Box::new(sqlparser::dialect::PostgreSqlDialect {}),
    };
    let tokens = sqlparser::tokenizer::Tokenizer::new(d.as_ref(), &sql).tokenize_with_location();
    for t in tokens.unwrap() {
        println!("{:?} {:?}", t.span.start, t.token);
    }
}
