mod secrets;
mod spec_corpus;
