/**
 * google.protobuf.Struct / Value in protobufjs' bundled (camelCase) object form, as fast-check
 * arbitraries (test/wire.test.ts, test/ext-proc-wire.test.ts). `noNaN`: numbers without NaN (for
 * comparisons through toEqual after a translation that does not keep NaN).
 */
import fc from 'fast-check';

export function structArbitraries(text: fc.Arbitrary<string>, o: { noNaN?: boolean } = {}) {
  return fc.letrec((tie) => ({
    value: fc.oneof(
      { depthSize: 'small', withCrossShrink: true },
      fc.record({ stringValue: text }),
      fc.record({ numberValue: fc.double({ noNaN: o.noNaN === true }) }),
      fc.record({ boolValue: fc.boolean() }),
      fc.constant({ nullValue: 'NULL_VALUE' }),
      fc.constant({}),
      fc.record({ structValue: tie('struct') }),
      fc.record({ listValue: fc.record({ values: fc.array(tie('value'), { maxLength: 3 }) }) }),
    ),
    struct: fc.record({ fields: fc.dictionary(text, tie('value'), { maxKeys: 3 }) }),
  }));
}
