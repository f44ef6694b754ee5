pub mod codec;
pub mod domain;
pub mod window_task;
pub mod windows;
