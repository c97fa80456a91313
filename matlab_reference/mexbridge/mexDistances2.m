function varargout = mexDistances2(varargin)
% Octave stand-in for Kilosort2's mexDistances2 mex: pykilosort's kernel through mex_bridge.
varargout = cell(1, max(nargout, 1));
[varargout{:}] = mex_bridge('mexDistances2', nargout, varargin{:});
end
