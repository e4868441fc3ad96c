import { describe, expect, it } from 'vitest';
import { safeUrl } from '../../src/render/sanitize';

const base = 'https://app.example.com/setup/step';

describe('safeUrl', () => {
  it.each([
    ['/integrations', 'https://app.example.com/integrations'],
    ['integrations', 'https://app.example.com/setup/integrations'],
    ['../x', 'https://app.example.com/x'],
    ['?tab=2', 'https://app.example.com/setup/step?tab=2'],
    ['#top', 'https://app.example.com/setup/step#top'],
    ['https://docs.example.com/a', 'https://docs.example.com/a'],
    ['HTTP://Example.com', 'http://example.com/'],
    ['//cdn.example.com/x', 'https://cdn.example.com/x'],
  ])('allows %s', (url, expected) => {
    expect(safeUrl(url, base)).toBe(expected);
  });

  it.each([
    'javascript:alert(1)',
    'JaVaScRiPt:alert(1)',
    ' javascript:alert(1)',
    '\u0001javascript:alert(1)',
    'java\tscript:alert(1)',
    'java\nscript:alert(1)',
    'data:text/html,<script>alert(1)</script>',
    'vbscript:msgbox',
    'file:///etc/passwd',
    'blob:https://app.example.com/uuid',
    'mailto:a@b.c',
    '',
    '   ',
  ])('refuses %j', (url) => {
    expect(safeUrl(url, base)).toBeUndefined();
  });

  it('refuses non-strings', () => {
    expect(safeUrl(undefined, base)).toBeUndefined();
    expect(safeUrl({ toString: () => '/x' }, base)).toBeUndefined();
  });

  it('keeps relative URLs relative when there is no http(s) page', () => {
    expect(safeUrl('/x')).toBe('/x');
    expect(safeUrl('javascript:alert(1)')).toBeUndefined();
  });
});
