//! Placing the last layers of a text model on a Vulkan device (llama.cpp's `-ngl`): their
//! weights uploaded once, their key/value stores on the device, and, when it holds every
//! layer, the output norm and matrix too.

use super::model::{upload_layer, Layer, Placement, TextModel};
use super::TextError;
use crate::backend::vulkan::{VkVector, VkWeight, Vulkan};
use crate::backend::{Backend, BackendError};
use crate::vulkan::VulkanError;

/// The part of a text model a Vulkan device runs.
pub(crate) struct Offload {
    /// The device (each forward pass runs a session of it).
    pub(crate) device: Vulkan,
    /// The model's last layers, in order.
    pub(crate) layers: Vec<Layer<'static, Vulkan>>,
    /// The output norm and matrix, when the device holds every layer.
    pub(crate) output: Option<(VkVector, VkWeight)>,
    /// Why fewer layers or not the output went there, when so.
    pub(crate) held_back: Option<String>,
}

/// Whether `e` says the device memory ran out (or one buffer is past what it can address), so
/// fewer layers would fit.
fn out_of_room(e: &BackendError) -> bool {
    matches!(
        e,
        BackendError::Vulkan(VulkanError::OutOfMemory { .. } | VulkanError::TooLarge { .. })
    )
}

impl TextModel<'_> {
    /// Moves the last `n_layers` layers (all of them and the output when `n_layers` reaches
    /// the layer count) to `device`, uploading their weights. Layers are uploaded from the
    /// last one back; when device memory runs out, the ones that fit stay there and the rest
    /// run on the CPU: the returned placement says how many it holds.
    pub fn offload(&mut self, device: Vulkan, n_layers: usize) -> Result<Placement, TextError> {
        let n_layer = self.config.n_layer;
        let want = n_layers.min(n_layer);
        if want > 0 {
            device.check_heads(self.heads())?;
        }
        let mut layers = Vec::with_capacity(want);
        let mut held_back = None;
        for w in self.layers.iter().rev().take(want) {
            match upload_layer(&device, w) {
                Ok(l) => layers.push(l),
                Err(e) if out_of_room(&e) => {
                    held_back = Some(e.to_string());
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        layers.reverse();
        let mut output = None;
        if layers.len() == n_layer && n_layers >= n_layer {
            let (norm, matrix) = self.output_weights();
            let up = device
                .upload_vector(norm)
                .and_then(|n| Ok((n, device.upload_matrix(matrix)?)));
            match up {
                Ok(o) => output = Some(o),
                Err(e) if out_of_room(&e) => held_back = Some(e.to_string()),
                Err(e) => return Err(e.into()),
            }
        }
        let none_fit = layers.is_empty() && want > 0;
        self.device = (!layers.is_empty()).then_some(Offload {
            device,
            layers,
            output,
            held_back: held_back.clone(),
        });
        let mut placed = self.placement();
        if none_fit {
            placed.held_back = held_back;
        }
        Ok(placed)
    }

    /// The Vulkan device holding some of the layers, if one does.
    pub fn vulkan(&self) -> Option<&Vulkan> {
        self.device.as_ref().map(|o| &o.device)
    }
}
