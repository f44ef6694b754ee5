pub mod processor;
pub mod sink;
pub mod store;
pub mod task;
