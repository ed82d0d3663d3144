//! AWS call failures as one-line messages, and which of them are worth another try: the
//! workspace's shared [`s3kit::error`], which the host's object storage uses too.

pub use s3kit::error::{AwsError, Failure};
