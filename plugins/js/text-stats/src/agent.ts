// text-stats in TypeScript: the `stats` and `top_words` actions of plugins/text-stats,
// with the same definitions, so both agents answer alike. A pure agent: no grants.
import { agent } from "corral-sdk";

const STOPWORDS = new Set(
  `a about after all also am an and any are as at be because been before being but by can
  could did do does for from had has have he her here him his how i if in into is it its it's
  just me more my no not of on or our out over she so some than that the their them then there
  these they this those to too up us very was we were what when where which while who why will
  with would you your`.split(/\s+/),
);

// The engine is built without Unicode property escapes (no \p{L}): a letter here is a
// character with case, so caseless scripts (CJK) differ from the Rust agent.
const alnum = (c: string | undefined) =>
  c !== undefined && (c.toLowerCase() !== c.toUpperCase() || (c >= "0" && c <= "9"));
const digit = (c: string | undefined) => c !== undefined && c >= "0" && c <= "9";

export function words(text: string): string[] {
  const chars = [...text];
  const found: string[] = [];
  let start: number | null = null;
  chars.forEach((c, i) => {
    const after = chars[i + 1];
    const joins =
      start !== null &&
      ((("'’-".includes(c)) && alnum(after)) || (".,".includes(c) && digit(chars[i - 1]) && digit(after)));
    if (alnum(c) || joins) {
      if (start === null) start = i;
    } else if (start !== null) {
      found.push(chars.slice(start, i).join(""));
      start = null;
    }
  });
  if (start !== null) found.push(chars.slice(start).join(""));
  return found;
}

function sentences(text: string): number {
  const chars = [...text];
  let count = 0;
  let hasWord = false;
  chars.forEach((c, i) => {
    const decimal = c === "." && digit(chars[i - 1]) && digit(chars[i + 1]);
    if ("!?…".includes(c) || (c === "." && !decimal)) {
      if (hasWord) count++;
      hasWord = false;
    } else if (alnum(c)) {
      hasWord = true;
    }
  });
  return count + (hasWord ? 1 : 0);
}

const lines = (text: string) => (text === "" ? 0 : text.split("\n").length - (text.endsWith("\n") ? 1 : 0));

interface Text {
  text: string;
}
interface TopWords extends Text {
  limit?: number;
  ignore_stopwords?: boolean;
}

const textSchema = {
  type: "object",
  properties: { text: { type: "string" } },
  required: ["text"],
  additionalProperties: false,
};

export const handler = agent({
  name: "text-stats-js",
  version: "0.1.0",
  description: "Measures and ranks text (the TypeScript example).",
  actions: {
    stats: {
      description: "Count characters, bytes, words, lines and sentences",
      schema: textSchema,
      run: ({ text }: Text) => {
        const found = words(text);
        const letters = found.reduce((n, w) => n + [...w].length, 0);
        return {
          chars: [...text].length,
          bytes: new TextEncoder().encode(text).length,
          words: found.length,
          lines: lines(text),
          sentences: sentences(text),
          average_word_length: found.length ? Math.round((letters / found.length) * 100) / 100 : 0,
        };
      },
    },
    top_words: {
      description: "List the most frequent words",
      schema: {
        type: "object",
        properties: {
          text: { type: "string" },
          limit: { type: "integer", minimum: 0 },
          ignore_stopwords: { type: "boolean" },
        },
        required: ["text"],
        additionalProperties: false,
      },
      run: ({ text, limit = 10, ignore_stopwords = true }: TopWords) => {
        const counts = new Map<string, number>();
        for (const w of words(text)) {
          const word = w.toLowerCase().replaceAll("’", "'");
          if (ignore_stopwords && STOPWORDS.has(word)) continue;
          counts.set(word, (counts.get(word) ?? 0) + 1);
        }
        const ranked = [...counts].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
        return { words: ranked.slice(0, limit).map(([word, count]) => ({ word, count })) };
      },
    },
  },
});
