function varargout = mex_bridge(name, nout, varargin)
% Stand-in for a compiled Kilosort2 mex file: run pykilosort's kernel through mex_bridge.py.
% The arguments go to a .mat file, python3 (or $MEX_BRIDGE_PYTHON) computes the outputs with
% pykilosort.kernels.mex.call_mex, and they come back the same way. With $MEX_CAPTURE_DIR set,
% the Python side keeps selected calls (inputs and outputs) there as test fixtures.
persistent work
if isempty(work), work = tempname(); mkdir(work); end
s = struct();
for k = 1:numel(varargin), s.(sprintf('a%d', k)) = varargin{k}; end
fin = fullfile(work, 'in.mat'); fout = fullfile(work, 'out.mat');
save('-v7', fin, '-struct', 's');
py = getenv('MEX_BRIDGE_PYTHON'); if isempty(py), py = 'python3'; end
script = fullfile(fileparts(mfilename('fullpath')), 'mex_bridge.py');
[status, msg] = system(sprintf('"%s" "%s" %s "%s" "%s"', py, script, name, fin, fout));
if status ~= 0, error('mex_bridge: %s failed:\n%s', name, msg); end
o = load(fout);
varargout = cell(1, max(nout, 1));
for k = 1:max(nout, 1), varargout{k} = o.(sprintf('o%d', k)); end
end
