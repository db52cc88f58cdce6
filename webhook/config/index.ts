export { defaultInjectionConfig, type InjectionConfig } from './injection-config.js';
export { InjectionConfigError, loadInjectionConfig, parseInjectionConfig } from './parse-config.js';
