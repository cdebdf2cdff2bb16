// Checks a value against the subset of JSON Schema an action's `schema` may use:
// type (one or a list), properties, required, additionalProperties (false or a
// schema), items, enum, const, minimum, maximum, minLength, maxLength, anyOf.
// Returns null when the value fits, or a message naming where it does not.

function kind(value) {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  if (typeof value === "number") return Number.isInteger(value) ? "integer" : "number";
  return typeof value; // string, boolean, object
}

function fits(value, type) {
  const k = kind(value);
  return k === type || (type === "number" && k === "integer");
}

export function check(value, schema, path) {
  if (schema === true || schema === undefined) return null;
  if (schema === false) return `${path}: not allowed`;
  if (schema.type !== undefined) {
    const types = Array.isArray(schema.type) ? schema.type : [schema.type];
    if (!types.some((t) => fits(value, t))) return `${path}: expected ${types.join(" or ")}, got ${kind(value)}`;
  }
  if (schema.enum !== undefined && !schema.enum.some((e) => JSON.stringify(e) === JSON.stringify(value))) {
    return `${path}: must be one of ${schema.enum.map((e) => JSON.stringify(e)).join(", ")}`;
  }
  if (schema.const !== undefined && JSON.stringify(schema.const) !== JSON.stringify(value)) {
    return `${path}: must be ${JSON.stringify(schema.const)}`;
  }
  if (typeof value === "number") {
    if (schema.minimum !== undefined && value < schema.minimum) return `${path}: must be at least ${schema.minimum}`;
    if (schema.maximum !== undefined && value > schema.maximum) return `${path}: must be at most ${schema.maximum}`;
  }
  if (typeof value === "string") {
    const length = [...value].length;
    if (schema.minLength !== undefined && length < schema.minLength) return `${path}: must have at least ${schema.minLength} characters`;
    if (schema.maxLength !== undefined && length > schema.maxLength) return `${path}: must have at most ${schema.maxLength} characters`;
  }
  if (Array.isArray(value) && schema.items !== undefined) {
    for (let i = 0; i < value.length; i++) {
      const problem = check(value[i], schema.items, `${path}[${i}]`);
      if (problem !== null) return problem;
    }
  }
  if (kind(value) === "object") {
    for (const name of schema.required ?? []) {
      if (!(name in value)) return `${path}.${name}: missing`;
    }
    const properties = schema.properties ?? {};
    for (const [name, v] of Object.entries(value)) {
      const sub = Object.prototype.hasOwnProperty.call(properties, name) ? properties[name] : schema.additionalProperties;
      if (sub === false) return `${path}.${name}: unknown field`;
      const problem = check(v, sub, `${path}.${name}`);
      if (problem !== null) return problem;
    }
  }
  if (schema.anyOf !== undefined && !schema.anyOf.some((s) => check(value, s, path) === null)) {
    return `${path}: fits none of the allowed schemas`;
  }
  return null;
}
