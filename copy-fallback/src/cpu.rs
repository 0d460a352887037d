//! The CPU backend: a synchronous memcpy, reported at the next poll.

use std::sync::Arc;

use super::{Completion, CopyEngine, CopyTarget, Descriptor, Health, Refused};

/// Copies on the calling thread, into `T`, from source buffers of type `B`.
#[derive(Debug)]
pub struct CpuEngine<T, B> {
    target: Arc<T>,
    done: Vec<Completion<B>>,
}

impl<T: CopyTarget, B> CpuEngine<T, B> {
    /// A CPU engine writing into `target`.
    pub fn new(target: Arc<T>) -> Self {
        Self {
            target,
            done: Vec::new(),
        }
    }
}

impl<T: CopyTarget, B: AsRef<[u8]>> CopyEngine<B> for CpuEngine<T, B> {
    fn submit(&mut self, descriptor: Descriptor<B>) -> Result<(), Refused<B>> {
        let result = self.target.write(descriptor.dst, descriptor.src.as_ref());
        self.done.push(Completion { descriptor, result });
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<Completion<B>>) -> usize {
        let n = self.done.len();
        out.append(&mut self.done);
        n
    }

    fn health(&self) -> Health {
        Health::Healthy
    }

    fn outstanding(&self) -> usize {
        self.done.len()
    }
}
