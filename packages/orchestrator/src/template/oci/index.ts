export { nonPublicRange, RegistryAllowList } from "./address-policy.js";
export { LayerError } from "./extract.js";
export {
  applyLayer,
  applyLayers,
  DEFAULT_IMAGE_MAX_BYTES,
  layerSandboxArgs,
  probeLayerSandbox,
} from "./layers.js";
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
