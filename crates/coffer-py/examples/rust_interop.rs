//! The Rust side of the Python suite's cross-language tests: seals and opens one value of a
//! coffer-columns table with coffer-postgres, exactly as a Rust application would.
//!
//! ```text
//! rust_interop seal CONFIG SCHEMA TABLE ROW COLUMN TEXT     # prints the ciphertext, hex
//! rust_interop open CONFIG SCHEMA TABLE ROW COLUMN HEX      # prints the text
//! ```

use std::path::Path;

use coffer_keys::config::Config;
use coffer_postgres::{Columns, Encrypted, Schema, Storage};

fn main() {
    if let Err(e) = run() {
        eprintln!("rust_interop: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    let [_, op, config, schema, table, row, column, value] = a.as_slice() else {
        return Err("usage: rust_interop seal|open CONFIG SCHEMA TABLE ROW COLUMN VALUE".into());
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let config = Config::load(Path::new(config))?;
        let keyring = coffer_assembly::open_keyring(&config).await?;
        let cols = Columns::new(keyring, Schema::load(Path::new(schema))?.table(table)?);
        match op.as_str() {
            "seal" => {
                let e = cols.seal(column, row.as_str(), value.as_str()).await?;
                println!("{}", hex_encode(e.as_bytes()));
            }
            "open" => {
                let e = Encrypted::<String>::from_bytes(hex_decode(value)?, Storage::Bytea)?;
                let s: String = cols.open(column, row.as_str(), &e).await?;
                println!("{s}");
            }
            _ => return Err("the operation is seal or open".into()),
        }
        Ok(())
    })
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hex_decode(s: &str) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    (0..s.len())
        .step_by(2)
        .map(|i| Ok(u8::from_str_radix(s.get(i..i + 2).ok_or("odd hex")?, 16)?))
        .collect()
}
