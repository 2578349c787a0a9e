//! `reconciler schema`: print the JSON Schema of the stack format (the same text as the
//! checked-in schemas/stack.schema.json).

use crate::spec::schema;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<i32> {
    print!("{}", schema::stack_schema_text());
    Ok(0)
}
