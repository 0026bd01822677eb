export { applyLayer, applyLayers } from "./layers.js";
export { type ImageReference, InvalidImageReferenceError, parseImageReference } from "./reference.js";
export {
  type Descriptor,
  type ImageConfig,
  MEDIA_TYPES,
  type PulledImage,
  RegistryClient,
  RegistryError,
  type RegistryOptions,
} from "./registry.js";
